"""The planner without a kernel: which operators go into the BPF program,
why the others stay in Python, and what pipeline values may reach the C."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import pytest
from clirun import flowtrace

from flowtrace import Event, KernelSource, Pipeline, Probe, Tracepoint
from flowtrace.c_literals import (
    LiteralError,
    bytes_equal,
    bytes_prefix,
    integer,
    integer_range,
    string_bytes,
)
from flowtrace.kernel_chain import FilterStage, Unsupported, condition_c
from flowtrace.kernel_forms import Comparison, Place
from flowtrace.kernel_view import record_view
from flowtrace.ktypes import Char, KernelType, ktime_ns, s8, s64, task_comm, task_pid, u8, u32, u64
from flowtrace.map_output import ChainOutput
from flowtrace.operators import (
    Collect,
    Count,
    EventTime,
    F,
    Sliding,
    Tumbling,
    count,
    filter,
    join,
    log2_histogram,
    map,
    window,
)
from flowtrace.testing import CollectSink, ListSource


class Write(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    comm: task_comm
    fd: u32
    size: u64
    small: u8
    delta: s8
    offset: s64
    path: Annotated[str, Char(8)]

    @property
    def kib(self) -> int:
        return self.size // 1024


def writes() -> KernelSource[Write]:
    probe = Probe("entry of write(2)", Tracepoint("syscalls", "sys_enter_write"), body="")
    return KernelSource(Write, probe, name="writes")


def places(*operators: Any) -> list[tuple[str, str, str]]:
    pipeline = Pipeline(writes(), operators, CollectSink[Any]())
    return [(p.stage, p.where, p.why) for p in pipeline.places()]


def where(*operators: Any) -> list[str]:
    return [w for _, w, _ in places(*operators)[1:-1]]


def chain_text(*operators: Any) -> str:
    placement = Pipeline(writes(), operators, CollectSink[Any]()).placement()
    output = placement.source.definition().output
    assert isinstance(output, ChainOutput)
    return output.chain.declarations + output.chain.submit


# -- placement -----------------------------------------------------------------


def test_the_longest_prefix_with_kernel_forms_goes_into_the_program() -> None:
    pipeline = Pipeline(
        writes(),
        [filter(F.fd == 1), count("comm"), map(lambda t: t)],
        CollectSink[Any](),
    )
    placement = pipeline.placement()
    assert placement.in_kernel == 2
    assert [(p.stage, p.where) for p in pipeline.places()] == [
        ("writes", "kernel"),
        ("filter", "kernel"),
        ("count", "kernel"),
        ("map", "user"),
        ("collect", "user"),
    ]
    assert pipeline.places()[3].why.startswith("follows an aggregate")


def test_everything_after_the_first_user_space_operator_stays_there() -> None:
    found = places(filter(lambda e: e.fd == 1), filter(F.fd == 1), count("comm"))
    assert [w for _, w, _ in found[1:4]] == ["user", "user", "user"]
    assert "a Python function" in found[1][2]
    assert found[2][2] == "follows filter, which runs in user space"


@pytest.mark.parametrize(
    ("operator", "why"),
    [
        (filter(F.kib > 3), "reads 'kib', which the kernel record of Write computes in Python"),
        (filter(F.fd > 1.5), "compares the integer field 'fd' with float 1.5"),
        (filter(F.fd == "1"), "compares the integer field 'fd' with str '1'"),
        (filter(F.comm < "b"), "compares the string field 'comm' with <"),
        (filter(F.comm == "x" * 17), "is longer than the field (char[16])"),
        (filter(F.comm == "a\0b"), "a NUL character never matches"),
        (filter(F.comm == "\ufffd"), "matches invalid bytes only after decoding"),
        (filter(F.fd.isin(range(100))), "isin on 'fd' with 100 values"),
        (count(lambda e: e.fd), "counts by a key a Python function computes"),
        (window(Collect()), "the aggregate collect has no in-kernel form"),
        (window(Count(), every=Sliding(2.0, 1.0)), "a sliding window"),
        (window(Count(), every=Tumbling(1.0), clock=EventTime("ts")), "an event-time window"),
        (window(Count(), every=Tumbling(0.001)), "windows of 0.001 s"),
        (log2_histogram("size", divisor=1 << 64), "divisor 18446744073709551616"),
        (log2_histogram(lambda e: e.size), "a value a Python function computes"),
        (log2_histogram("path"), "log2 of the string field 'path'"),
        (count("comm", max_keys=1 << 30), "max_keys=1073741824"),
        (join(Write, Write, key="fd"), "it emits incomplete starts"),
        (join(Write, Write, key="fd", emit_incomplete=False), "which are not two of the types"),
    ],
)
def test_an_operator_without_a_kernel_form_says_why(operator: Any, why: str) -> None:
    ((_, placed, reason),) = places(operator)[1:2]
    assert placed == "user"
    assert why in reason


def test_pushdown_off_and_sources_that_are_not_programs_keep_everything_in_python() -> None:
    ops = [filter(F.fd == 1), count("comm")]
    off = Pipeline(writes(), ops, CollectSink[Any](), pushdown=False)
    assert off.placement().in_kernel == 0
    assert off.placement().source is off.source  # its own program, operators left out
    assert {p.why for p in off.places()[1:3]} == {
        "pushdown is off (Pipeline(pushdown=False), --no-pushdown)"
    }
    assert off.replace(sink=CollectSink[Any]()).pushdown is False
    listed = Pipeline(ListSource([]), ops, CollectSink[Any]())
    assert [p.where for p in listed.places()] == ["user"] * 4
    assert "is not a BPF program" in listed.places()[1].why


def test_a_source_alone_or_before_an_operator_without_a_kernel_form_runs_as_it_is() -> None:
    source = writes()
    alone = source.placement([])
    assert (alone.places, alone.source, alone.in_kernel) == (
        (Place("writes", "kernel", "a BPF program attached to its probes"),),
        source,
        0,
    )
    first_in_python = source.placement([map(str), filter(F.fd == 1)])
    assert (first_in_python.source, first_in_python.in_kernel) == (source, 0)
    assert [p.where for p in first_in_python.places] == ["kernel", "user", "user"]


def test_a_runs_reorder_window_is_no_longer_than_the_pipelines_latency() -> None:
    source = writes()  # ts is bpf_ktime_get_ns(); this machine has several CPUs
    windows = {latency: source._reorder(latency) for latency in [None, 0.5, 0.0002, 0.0]}
    assert {k: (r.field, r.window_ns) for k, r in windows.items() if r is not None} == {
        None: ("ts", 1_000_000),
        0.5: ("ts", 1_000_000),
        0.0002: ("ts", 200_000),
        0.0: ("ts", 0),
    }


def test_a_kernel_source_is_named_after_its_event_unless_named() -> None:
    probe = Probe("entry of write(2)", Tracepoint("syscalls", "sys_enter_write"), body="")
    assert KernelSource(Write, probe).name == "Write"
    assert KernelSource(Write, probe, name="w").name == "w"


def test_a_source_whose_program_makes_no_records_keeps_operators_in_python() -> None:
    from flowtrace.sources.exec import exec_calls
    from flowtrace.sources.profile import cpu_samples
    from flowtrace.sources.syscalls import quick_syncs_printed
    from flowtrace.sources.xdp import protocol_packets

    cases: list[tuple[Any, Any, str]] = [
        (cpu_samples(), filter(F.count > 1), "StackCounts"),
        (protocol_packets("lo"), filter(F.protocol == 6), "CounterArray"),
        (exec_calls(), filter(F.pid == 1), "Converted"),
    ]
    for source, operator, output in cases:
        placed = Pipeline(source, [operator], CollectSink[Any]()).places()
        assert (placed[1].where, placed[1].why) == (
            "user",
            f"its output ({output}) takes no operators in the kernel",
        )
    printed = Pipeline(quick_syncs_printed(), [filter(F.pid == 1)], CollectSink[Any]())
    assert printed.places()[1].why == (
        "the source's probes print lines (trace_pipe) instead of filling a record"
    )


def test_a_kernel_source_takes_an_output_or_a_transport_not_both() -> None:
    from flowtrace.outputs import buffer_output

    probe = Probe("entry of write(2)", Tracepoint("syscalls", "sys_enter_write"), body="")
    for extra in [{"transport": "perf"}, {"buffer_pages": 8}]:
        with pytest.raises(ValueError) as info:
            KernelSource(Write, probe, output=buffer_output("auto", 8), **extra)  # type: ignore[arg-type]
        assert str(info.value) == "give either output= or transport=/buffer_pages=, not both"


def test_explain_json_lists_every_stage_with_where_and_why() -> None:
    result = flowtrace(
        "explain", "--json", "-e", 'sync_calls() | filter(F.comm == "sync") | map(str) | count("x")'
    )
    assert result.returncode == 0, result.stderr
    stages = json.loads(result.stdout)
    assert [(s["stage"], s["where"]) for s in stages] == [
        ("sync", "kernel"),
        ("filter", "kernel"),
        ("map", "user"),
        ("count", "user"),
        ("console", "user"),
    ]
    assert stages[2]["why"] == "a Python function"
    assert all(isinstance(s["why"], str) and s["why"] for s in stages)
    off = flowtrace("explain", "--json", "--no-pushdown", "-e", 'sync_calls() | count("pid")')
    assert [s["where"] for s in json.loads(off.stdout)] == ["kernel", "user", "user"]


# -- values reaching the C -----------------------------------------------------

HOSTILE = ['a"b', "a\\b", "*/ x", "a\nb", "%s%n", "'; }", "/*", "é"]


@pytest.mark.parametrize("text", HOSTILE)
def test_strings_reach_the_c_as_byte_comparisons_only(text: str) -> None:
    code = chain_text(filter((F.comm == text) | F.path.startswith(text[:3]) | F.comm.isin([text])))
    condition = re.search(r"if \(!(\(.*e->comm\[0\].*)\)\n", code)
    assert condition is not None
    # nothing but field reads, casts, byte values and logic
    assert re.fullmatch(r"[\w\s()\[\]\->=&|!^]+", condition[1]), condition[1]
    data = text.encode()
    assert all(f"^ {b})" in condition[1] for b in data)


def test_the_only_text_in_the_c_is_the_frameworks_own() -> None:
    code = chain_text(filter(F.comm == 'x"*/\n'), count("comm"))
    assert '"' not in code.replace('asm volatile("" : "+r"', "")
    assert "*/" not in code
    assert "\\" not in code


@pytest.mark.parametrize("ktype", [u8, s8, u32, s64, u64])
def test_integers_are_range_checked_for_their_field(ktype: Any) -> None:
    from flowtrace.ktypes import kernel_type

    kt = kernel_type(ktype)
    assert kt is not None
    low, high = integer_range(kt)
    assert integer(low, kt).startswith(("0", "-", "("))
    assert integer(high, kt).endswith(("ULL", "LL"))
    for bad in (low - 1, high + 1, True, 1.0, "1", None):
        with pytest.raises(LiteralError):
            integer(bad, kt)


@pytest.mark.parametrize("field", ["small", "delta"])
@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_a_literal_outside_the_fields_range_compiles_to_pythons_answer(field: str, op: str) -> None:
    """``F.small < 300`` holds for every u8: it compiles to a constant, the
    one Python gives for every value the field can hold."""
    view = record_view(layout_of_write(), (Write,))
    kt = view.members[0].field(field)
    assert kt is not None
    low, high = integer_range(kt.ktype)
    compare = {
        "==": int.__eq__,
        "!=": int.__ne__,
        "<": int.__lt__,
        "<=": int.__le__,
        ">": int.__gt__,
        ">=": int.__ge__,
    }[op]
    for literal in (low - 1000, low - 1, high + 1, 1 << 70, -(1 << 70)):
        c = condition_c(Comparison(field, op, literal), view)
        answers = {compare(v, literal) for v in range(low, high + 1)}
        assert answers == {c == "1"}, (literal, c)


def layout_of_write() -> Any:
    from flowtrace.events import layout_of

    return layout_of(Write)


def test_byte_comparisons_stop_at_the_nul_a_decoded_field_stops_at() -> None:
    assert (
        bytes_equal("e->p", 4, "ab")
        == "((((u8)e->p[0] ^ 97) | ((u8)e->p[1] ^ 98) | (u8)e->p[2]) == 0)"
    )
    assert bytes_equal("e->p", 2, "ab") == "((((u8)e->p[0] ^ 97) | ((u8)e->p[1] ^ 98)) == 0)"
    assert bytes_equal("e->p", 4, "") == "(((u8)e->p[0]) == 0)"
    assert bytes_prefix("e->p", 4, "a") == "((((u8)e->p[0] ^ 97)) == 0)"  # no NUL after it
    assert bytes_prefix("e->p", 4, "") == "1"
    with pytest.raises(LiteralError):
        string_bytes("abc", 2)
    with pytest.raises(LiteralError):
        string_bytes(b"ab", 4)
    with pytest.raises(LiteralError):
        string_bytes("\udc80", 4)


def test_a_predicate_part_without_a_c_form_is_named() -> None:
    view = record_view(layout_of_write(), (Write,))
    with pytest.raises(Unsupported, match="'nope'"):
        condition_c(Comparison("nope", "==", 1), view)
    stage = FilterStage(condition_c(Comparison("fd", "in", frozenset({1, -1, 1 << 40})), view))
    assert stage.condition == "(e->fd == 1ULL)"


def test_kernel_types_in_the_view_are_the_records() -> None:
    view = record_view(layout_of_write(), (Write,))
    fd = view.members[0].field("fd")
    assert fd is not None and fd.c == "e->fd" and fd.ktype == KernelType("u32", 4, "<u4")


class Exec(Event, frozen=True):
    pid: task_pid
    filename: Annotated[str, Char(256)]


def test_keys_that_would_not_fit_the_programs_stack_stay_in_python() -> None:
    probe = Probe("exec", Tracepoint("sched", "sched_process_exec"), body="")
    pipeline = Pipeline(
        KernelSource(Exec, probe), [filter(F.pid > 1), count("filename")], CollectSink[Any]()
    )
    assert [p.where for p in pipeline.places()] == ["kernel", "kernel", "user", "user"]
    assert "512-byte stack" in pipeline.places()[2].why
