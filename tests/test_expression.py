"""Pipelines as one expression (``flowtrace run -e``): the names an expression
sees, one-line errors for every kind of bad expression, and the console sink
an expression without a sink prints to. No kernel: building a kernel source
attaches nothing, and runs replace the source with a list of events."""

from __future__ import annotations

import builtins
from importlib.metadata import EntryPoint, entry_points

import pytest

from flowtrace import argument_sources, ktypes, operators, typed_sources
from flowtrace.expression import (
    SAFE_BUILTINS,
    TYPED_SOURCES,
    ExpressionError,
    evaluate,
    expression_names,
    item_line,
)
from flowtrace.operators import Count, Filter
from flowtrace.records import CountRow, CountTable, WindowResult
from flowtrace.sources.syscalls import SyncCall
from flowtrace.testing import ListSource


def error(text: str) -> str:
    with pytest.raises(ExpressionError) as caught:
        evaluate(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("-e: ")
    return message


def test_the_names_are_operators_kernel_types_plugins_and_a_few_builtins() -> None:
    names = expression_names()
    sources = {ep.name for ep in entry_points(group="flowtrace.sources")}
    sinks = {ep.name for ep in entry_points(group="flowtrace.sinks")}
    assert {"sync_calls", "read_latencies"} <= sources
    assert {"console", "ndjson", "socket", "metrics"} <= sinks
    expected = {
        **dict.fromkeys(SAFE_BUILTINS, "builtin"),
        **dict.fromkeys(sinks, "sink"),
        **dict.fromkeys(sources, "source"),
        **dict.fromkeys([*ktypes.__all__, "Arg"], "kernel type"),
        **dict.fromkeys(operators.__all__, "operator"),
        **dict.fromkeys(TYPED_SOURCES, "source"),
    }
    assert set(TYPED_SOURCES) <= {*typed_sources.__all__, *argument_sources.__all__}
    assert names["tracepoint"].load() is typed_sources.tracepoint
    assert {name: entry.group for name, entry in names.items()} == expected
    assert names["F"].load() is operators.F
    assert names["u32"].load() is ktypes.u32
    assert names["filter"].load() is operators.filter  # the operator, not the builtin
    assert names["len"].load() is builtins.len
    assert not {"open", "eval", "exec", "getattr", "__import__", "compile"} & set(names)


def test_a_source_an_operator_and_a_sink_by_name() -> None:
    pipeline = evaluate('sync_calls() | filter(F.comm == "sync") | count("comm") | ndjson("-")')
    assert pipeline.source.stage_name() == "sync"
    assert [type(op) for op in pipeline.operators] == [Filter, type(operators.count("comm"))]
    assert pipeline.sink.stage_name() == "ndjson"


def test_aggregate_classes_and_kernel_types_are_names() -> None:
    pipeline = evaluate("sync_calls() | window(Count(), every=Tumbling(1.0))")
    assert isinstance(pipeline.operators[0].aggregate, Count)  # type: ignore[attr-defined]
    assert evaluate("sync_calls() | filter(lambda e: e.pid < u32.size * 1000)").operators


async def _printed(text: str, events: list[SyncCall], capsys: pytest.CaptureFixture[str]) -> str:
    pipeline = evaluate(text)
    await pipeline.replace(source=ListSource(events)).run()
    return capsys.readouterr().out


SYNCS = [SyncCall(ts=10, pid=7, comm="sync"), SyncCall(ts=20, pid=8, comm="bash")]


@pytest.mark.anyio
async def test_an_expression_without_a_sink_prints_events_on_the_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await _printed('sync_calls() | filter(F.comm == "sync")', SYNCS, capsys)
    assert out == "ts=10 pid=7 comm='sync'\n"
    out = await _printed("sync_calls()", SYNCS, capsys)
    assert out == "ts=10 pid=7 comm='sync'\nts=20 pid=8 comm='bash'\n"


@pytest.mark.anyio
async def test_an_expression_without_a_sink_prints_results_as_the_console_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await _printed('sync_calls() | count("comm")', [*SYNCS, SYNCS[0]], capsys)
    assert out.splitlines() == ["COMM COUNT", "sync     2", "bash     1"]
    out = await _printed('sync_calls() | log2_histogram("pid")', SYNCS, capsys)
    assert out.splitlines()[1:] == [
        "     value               : count     distribution",
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 0        |                                        |",
        "         4 -> 7          : 1        |****************************************|",
        "         8 -> 15         : 1        |****************************************|",
    ]


def test_item_line_prints_events_records_and_plain_values() -> None:
    assert item_line(SYNCS[0]) == "ts=10 pid=7 comm='sync'"
    result = WindowResult(window_start=0.0, window_end=1.0, aggregate="count", value=3)
    assert item_line(result) == "window: window_start=0.0 window_end=1.0 aggregate='count' value=3"
    assert item_line(CountTable(rows=[CountRow(key={"a": 1}, count=2)], others=0)).startswith(
        "count_table: "
    )
    assert item_line(42) == "42"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('sync_calls() | count("comm"', "-e: syntax error at column 21: '(' was never closed"),
        ("sync_calls() ||", "-e: syntax error at column 15: invalid syntax"),
        (
            '(sync_calls()\n| count("comm"]',
            "-e: syntax error at line 2, column 15: closing parenthesis ']' does not match"
            " opening parenthesis '('",
        ),
        ("sync_calls(); 1", "-e: syntax error at column 13: invalid syntax"),
        ("x = sync_calls()", "-e: syntax error at column 3: invalid syntax"),
    ],
)
def test_a_syntax_error_is_one_line_with_its_column(text: str, message: str) -> None:
    assert error(text) == message


def test_an_unknown_name_lists_close_matches() -> None:
    assert error("sync_cals()") == (
        "-e: unknown name 'sync_cals' at column 1; did you mean sync_calls, strlen_calls?"
    )
    assert error('sync_calls() | cuont("comm")') == (
        "-e: unknown name 'cuont' at column 16; did you mean count, Count?"
    )


def test_the_leftmost_unknown_name_is_reported() -> None:
    # a breadth-first walk of the tree meets xyzzy before qq
    assert error("qq(1) | xyzzy").startswith("-e: unknown name 'qq' at column 1;")


def test_an_unknown_name_without_close_matches_lists_every_name() -> None:
    message = error("xyzzy()")
    head = "-e: unknown name 'xyzzy' at column 1; the names are sources: "
    assert message.startswith(head)
    for name, entry in expression_names().items():
        assert f" {name}," in message or f" {name};" in message or message.endswith(f" {name}")
        assert f"{entry.group}s: " in message


@pytest.mark.parametrize("name", ["open", "__import__", "eval", "getattr", "globals"])
def test_builtins_outside_the_safe_set_are_unknown(name: str) -> None:
    assert error(f"{name}('x')").startswith(f"-e: unknown name {name!r} at column 1;")


def test_names_bound_by_the_expression_are_not_unknown_where_bound() -> None:
    assert evaluate("sync_calls() | filter(lambda e: e.pid in {p for p in range(3)})")
    assert evaluate("sync_calls() | map(lambda e, *rest, k=1, **kw: (e, rest, k, kw))")
    assert error("sync_calls() | filter(lambda e: e.pid == pidd)").startswith(
        "-e: unknown name 'pidd' at column 42;"
    )
    # bound inside the comprehension only: found while evaluating
    assert error("[x for x in range(2)] and x").startswith("-e: unknown name 'x'; ")


def test_private_attributes_are_refused() -> None:
    assert error("().__class__.__bases__") == (
        "-e: attribute '__bases__' at column 1: attributes starting with '_' cannot be used"
        " in an expression"
    )
    assert error("sync_calls() | filter(lambda e: e._x)").startswith("-e: attribute '_x'")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sync_calls", "-e: the expression is 'sync_calls' itself, not called: write sync_calls()"),
        (
            "sync_calls() | console",
            "-e: sink 'console' at column 16 is not called: write console()",
        ),
        ("sync_calls() | count", "-e: operator 'count' at column 16 is not called: write count()"),
        (
            'count("comm")',
            "-e: the expression is the operator 'count' with no source in front of it:"
            " write SOURCE | operator",
        ),
        ("console()", "-e: the expression is the sink 'console' alone: write SOURCE | sink"),
        (
            "3",
            "-e: the expression is a int, not a pipeline: write SOURCE [| operator ...] [| sink]",
        ),
        (
            "sync_calls() | sync_calls()",
            "-e: cannot pipe into KernelSource: expected an Operator or a Sink",
        ),
        (
            'sync_calls() | count("comm", top=-1)',
            "-e: count: top must be a positive integer, got -1",
        ),
        ("sync_calls(bogus=1)", "-e: TypeError: sync_calls() got an unexpected keyword argument"),
        ("1 // 0", "-e: ZeroDivisionError: integer division or modulo by zero"),
    ],
)
def test_an_expression_that_is_not_a_pipeline_is_one_line(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_plugins_load_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("broken", "flowtrace_no_such_plugin:source", "flowtrace.sources")

    def with_broken(*, group: str, name: str | None = None) -> list[EntryPoint]:
        if name is not None:
            return list(entry_points(group=group, name=name))
        found = list(entry_points(group=group))
        return [*found, broken] if group == "flowtrace.sources" else found

    monkeypatch.setattr("flowtrace.expression.entry_points", with_broken)
    assert evaluate("sync_calls()")
    assert error("broken()") == (
        "-e: source 'broken' failed to load: ModuleNotFoundError: No module named"
        " 'flowtrace_no_such_plugin'; reinstall the package that provides it"
    )


def test_the_default_sink_must_be_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    real = entry_points

    def without_console(*, group: str, name: str | None = None) -> object:
        return [] if name is not None else real(group=group)

    monkeypatch.setattr("flowtrace.expression.entry_points", without_console)
    assert error("sync_calls()") == (
        "-e: no 'console' sink in the 'flowtrace.sinks' entry points to print with: reinstall"
        " flowtrace (pip install -e .) or end the expression with | SINK"
    )
    assert evaluate('sync_calls() | ndjson("-")').sink.stage_name() == "ndjson"


def test_each_evaluation_builds_new_stages() -> None:
    first, second = (evaluate('sync_calls() | count("comm")') for _ in range(2))
    assert first.source is not second.source
    assert first.operators[0] is not second.operators[0]


def test_flowtrace_names_hide_plugins_and_sources_hide_sinks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = {
        "flowtrace.sources": [
            EntryPoint("count", "flowtrace.sources.syscalls:sync_calls", "flowtrace.sources"),
            EntryPoint("both", "flowtrace.sources.syscalls:sync_calls", "flowtrace.sources"),
        ],
        "flowtrace.sinks": [
            EntryPoint("both", "flowtrace.sinks.ndjson:NdjsonSink", "flowtrace.sinks"),
        ],
    }

    def with_extra(*, group: str, name: str | None = None) -> list[EntryPoint]:
        if name is not None:
            return list(entry_points(group=group, name=name))
        return [*entry_points(group=group), *extra.get(group, [])]

    monkeypatch.setattr("flowtrace.expression.entry_points", with_extra)
    names = expression_names()
    assert names["count"].group == "operator"
    assert names["both"].group == "source"
    assert evaluate('both() | count("comm")').source.stage_name() == "sync"
