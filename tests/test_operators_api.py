"""The public surface of flowtrace.operators: __all__ is exactly what the
package exports, and every public operator documents its contract."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

import flowtrace.operators as ops
from flowtrace import stages, testing
from flowtrace.clock import ManualClock
from flowtrace.records import JoinIncomplete, LateEvent
from flowtrace.stages import Operator
from flowtrace.testing import OperatorHarness

ROOT = Path(__file__).resolve().parent.parent


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ops).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert sorted(ops.__all__) == sorted(public)


def test_every_export_has_a_docstring() -> None:
    for name in ops.__all__:
        value = getattr(ops, name)
        if callable(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


CONTRACT = {
    "what it buffers or holds": r"\b(buffers|holds|remembers)\b",
    "when it emits": r"\b(emits|emitted|passes)\b",
    "where side records go": r"\bside records?\b",
    "end of stream": r"\bend of stream\b",
    "errors": r"\berrors?\b|\braises\b|\bfails the stage\b",
}


def own_doc(obj: object) -> str:
    """The docstring ``obj`` itself has: a class's own ``__doc__`` (None when
    it has none, never its base class's), a function's ``__doc__``."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return " ".join((doc or "").split()).lower()


def contract_gaps(obj: object) -> list[str]:
    """What ``obj``'s own docstring fails to state of the operator contract."""
    doc = own_doc(obj)
    if not doc:
        return ["a docstring of its own"]
    return [what for what, pattern in CONTRACT.items() if not re.search(pattern, doc)]


def operator_classes() -> list[str]:
    return [
        name
        for name in ops.__all__
        if inspect.isclass(getattr(ops, name)) and issubclass(getattr(ops, name), Operator)
    ]


def test_operator_docstrings_state_their_contract() -> None:
    """Each public operator class, and each factory of operators that have
    no public class, says in its own docstring what it buffers, when it
    emits, where side records go, what it does at end of stream and which
    errors it raises."""
    classes = operator_classes()
    assert sorted(classes) == [
        "Distinct", "EventOperator", "Filter", "FlatMap", "Join", "Map", "MergeBy",
        "RunningCount", "Sample", "Throttle", "Window",
    ]  # fmt: skip
    for name in [*classes, "per_event", "stream_operator"]:
        assert contract_gaps(getattr(ops, name)) == [], name


def test_operator_factories_document_or_name_their_operator() -> None:
    """A factory returning a public operator class names that class in its
    own docstring (where the contract is stated)."""
    factories = [
        name
        for name in ops.__all__
        if inspect.isfunction(getattr(ops, name))
        and name not in ("field", "log2_bounds", "log2_index")  # not operator factories
    ]
    for name in factories:
        fn = getattr(ops, name)
        returned = re.match(r"\w+", str(inspect.signature(fn).return_annotation))
        assert returned is not None, name
        if returned.group() == "Callable":  # per_event, stream_operator
            assert contract_gaps(fn) == [], name
            continue
        cls = getattr(ops, returned.group(), None)
        assert inspect.isclass(cls) and issubclass(cls, Operator), name
        assert re.search(rf":class:`(~[\w.]*\.)?{cls.__name__}`", fn.__doc__ or ""), name


@pytest.mark.parametrize(
    ("cls", "factory"),
    [
        (ops.Join, ops.join), (ops.Window, ops.window), (ops.MergeBy, ops.merge_by),
        (ops.RunningCount, ops.running_count), (ops.CountBy, ops.count),
        (ops.Log2, ops.log2_histogram), (ops.Linear, ops.linear_histogram),
        (ops.Distinct, ops.distinct), (ops.Sample, ops.sample), (ops.Throttle, ops.throttle),
        (ops.Map, ops.map), (ops.FlatMap, ops.flat_map), (ops.Filter, ops.filter),
    ],
)  # fmt: skip
def test_a_class_and_its_factory_default_alike(cls: type, factory: Any) -> None:
    """Built directly, a public operator class behaves as its factory's result."""
    own = inspect.signature(cls).parameters
    made = inspect.signature(factory).parameters
    shared = [p for p in own if p in made and own[p].default is not inspect.Parameter.empty]
    assert shared
    assert {p: own[p].default for p in shared} == {p: made[p].default for p in shared}


@pytest.mark.parametrize(
    ("make", "default"),
    [
        (lambda **k: ops.filter(ops.F.pid == 1, **k), "filter"),
        (lambda **k: ops.filter(pid=1, **k), "filter"),
        (lambda **k: ops.map(str, **k), "map"),
        (lambda **k: ops.flat_map(list, **k), "flat_map"),
        (lambda **k: ops.sample(2, **k), "sample"),
        (lambda **k: ops.distinct("pid", **k), "distinct"),
        (lambda **k: ops.throttle(1, **k), "throttle"),
        (lambda **k: ops.rate(every=ops.Tumbling(1.0), **k), "rate"),
        (lambda **k: ops.join(int, str, key="pid", **k), "join"),
        (lambda **k: ops.merge_by(**k), "merge_by"),
        (lambda **k: ops.running_count(**k), "running_count"),
        (lambda **k: ops.window(ops.Count(), **k), "window(count)"),
        (lambda **k: ops.window(ops.Sum("bytes"), **k), "window(sum)"),
        (lambda **k: ops.count("pid", **k), "count"),
        (lambda **k: ops.log2_histogram("bytes", **k), "log2_histogram"),
        (lambda **k: ops.linear_histogram("bytes", **k), "linear_histogram"),
    ],
)
def test_a_factory_names_its_stage_as_told_or_after_itself(make: Any, default: str) -> None:
    assert (make().stage_name(), make(name="mine").stage_name()) == (default, "mine")


def test_contract_check_fails_on_missing_statements() -> None:
    class Bare(ops.Filter[Any]):
        pass

    class Vague(ops.Filter[Any]):
        """Buffers nothing and emits per batch."""

    assert own_doc(Bare) == ""
    assert contract_gaps(Bare) == ["a docstring of its own"]
    assert contract_gaps(Vague) == ["where side records go", "end of stream", "errors"]


def test_window_alignment_is_documented_as_when_the_source_is_ready() -> None:
    docs = " ".join((ROOT / "docs" / "operators.md").read_text().split())
    window_doc = own_doc(ops.Window)
    statement = "start when the operator opens, which in a pipeline is when the source is ready"
    for text in (docs.lower(), window_doc):
        assert statement in text
    assert "moment the pipeline started" not in docs
    assert "when the operator opened" not in window_doc


# -- side records pass every operator ------------------------------------


class Ev(msgspec.Struct, frozen=True):
    n: int
    k: int = 0
    ts: int = 0


class Other(msgspec.Struct, frozen=True):
    k: int


class Tally(ops.EventOperator[Ev, int]):
    """Emits each event's ``n``. Holds nothing; side records pass; end of
    stream emits nothing; errors fail the stage."""

    def on_event(self, event: Ev) -> None:
        self.emit(event.n)


@ops.per_event
def doubled(e: Ev) -> int:
    return e.n * 2


def every_operator() -> list[Operator[Any, Any]]:
    return [
        ops.filter(ops.F.n >= 0),
        ops.filter(lambda e: e.n >= 0),
        ops.filter(n=1),
        ops.map(lambda e: e.n),
        ops.flat_map(lambda e: [e.n, e.n]),
        ops.sample(2),
        ops.distinct("k"),
        ops.throttle(1),
        ops.join(lambda e: e.n == 0, lambda e: e.n == 1, key="k"),
        ops.join(Ev, Other, key="k"),
        ops.window(ops.Count(), every=ops.Tumbling(1.0)),
        ops.window(ops.Sum("n"), every=ops.Sliding(2.0, 1.0), by="k"),
        ops.window(ops.Max("n")),
        ops.window(ops.Count(), every=ops.Tumbling(1.0), clock=ops.EventTime("ts")),
        ops.count("n"),
        ops.log2_histogram("n", divisor=2),
        ops.linear_histogram("n"),
        ops.rate(),
        Tally(),
        doubled(),
    ]


@pytest.mark.parametrize("op", every_operator(), ids=lambda op: op.stage_name())
def test_every_operator_passes_side_records_through(op: Operator[Any, Any]) -> None:
    """Side records never reach an operator's predicate, function, key or
    aggregate (each of these would fail on one), and come out unchanged,
    once each, in order."""
    incomplete = JoinIncomplete(key={"k": 9}, start=Ev(5), reason="timeout", waited=1.0)
    late = LateEvent(event=Ev(6), watermark=1.0, window_start=0.0, window_end=1.0)
    h = OperatorHarness(op, ManualClock())
    out = h.feed([incomplete, Ev(0), Ev(1), late, Ev(2, k=1)])
    out += h.feed([late])  # a batch of side records only
    out += h.advance(1.0) + h.finish()
    assert [r for r in out if r is incomplete or r is late] == [incomplete, late, late]


# -- other modules' public surface ---------------------------------------


def test_stages_and_testing_define_only_what_they_export() -> None:
    for module in (stages, testing):
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, TypeVar)
            and getattr(value, "__module__", None) == module.__name__
        }
        assert defined <= set(module.__all__), module.__name__


def test_stages_docstring_names_methods_that_exist() -> None:
    doc = stages.__doc__ or ""
    named = set(re.findall(r"``(\w+)(?:\(\))?``", doc))
    assert named
    for name in named:
        assert any(hasattr(c, name) for c in (stages.Source, stages.Operator, stages.Sink)), name


def test_records_encode_structured_for_machines() -> None:
    import msgspec

    from flowtrace.records import Bucket, Histogram, JoinIncomplete, JoinPair, LateEvent

    class Req(msgspec.Struct, frozen=True):
        ts: int
        dev: int

    records = [
        Histogram(field="bytes", unit="kbytes", scale="log2", buckets=[Bucket(0, 1, 3)]),
        JoinPair(key={"dev": 1}, start=Req(1, 1), complete=Req(5, 1), latency_ns=4),
        JoinIncomplete(key={"dev": 2}, start=Req(1, 2), reason="timeout", waited=10.0),
        LateEvent(event=Req(0, 3), watermark=2.0, window_start=0.0, window_end=1.0),
    ]
    decoded = [msgspec.json.decode(msgspec.json.encode(r)) for r in records]
    assert decoded[0]["buckets"] == [{"low": 0, "high": 1, "count": 3}]
    assert decoded[1]["key"] == {"dev": 1} and decoded[1]["start"] == {"ts": 1, "dev": 1}
    assert decoded[2]["reason"] == "timeout"
    assert decoded[3]["event"] == {"ts": 0, "dev": 3}
    assert [r.kind for r in records] == ["histogram", "join_pair", "join_incomplete", "late_event"]


# -- field declarations for checking a plan ------------------------------


class Read(msgspec.Struct, frozen=True):
    ts: int
    pid: int
    comm: str
    bytes: int


class Issue(msgspec.Struct, frozen=True):
    ts: int
    dev: int
    sector: int


class Complete(msgspec.Struct, frozen=True):
    ts: int
    dev: int
    sector: int


class Median(ops.Aggregate[Any, list[int]]):
    """An aggregate that says nothing of its fields or its record type."""

    def new(self) -> list[int]:
        return []

    def add(self, acc: list[int], events: list[Any]) -> list[int]:
        return acc + [e.bytes for e in events]

    def merge(self, accs: Any) -> list[int]:
        return [v for acc in accs for v in acc]

    def result(self, acc: list[int], start: float, end: float, key: Any) -> Any:
        return sorted(acc)[len(acc) // 2] if acc else None


def declarations() -> list[tuple[Any, tuple[str, ...], type | None]]:
    """Operators with the fields they read and their output type for Read input."""
    from flowtrace.records import CountTable, Histogram, WindowResult

    second, event_time = ops.Tumbling(1.0), ops.EventTime("ts")
    predicate = (ops.F.pid > 1) & ~ops.F.comm.isin({"sh"}) | (ops.F.pid == 0)
    return [
        (ops.filter(predicate), ("pid", "comm"), Read),
        (ops.filter(pid=1, comm="sh"), ("pid", "comm"), Read),
        (ops.filter(lambda e: e.pid > 1), (), Read),
        (ops.map(lambda e: e.pid), (), None),
        (ops.flat_map(lambda e: [e.pid]), (), None),
        (ops.sample(2), (), Read),
        (ops.distinct(["comm", "pid"]), ("comm", "pid"), Read),
        (ops.distinct(lambda e: e.pid), (), Read),
        (ops.throttle(5), (), Read),
        (ops.join(Issue, Complete, key=("dev", "sector")), ("dev", "sector", "ts"), None),
        (ops.join(Issue, Complete, key="dev", complete_key="sector", time_field=None),
         ("dev", "sector"), None),
        (ops.window(ops.Count(), every=second), (), WindowResult),
        (ops.window(ops.Sum("bytes"), by="comm", every=second, clock=event_time),
         ("bytes", "comm", "ts"), WindowResult),
        (ops.window(ops.Max(lambda e: e.bytes), by=lambda e: e.pid), (), WindowResult),
        (ops.window(ops.Collect(), by=["pid", "comm"]), ("pid", "comm"), WindowResult),
        (ops.window(Median()), (), None),
        (ops.count(["comm", "pid"]), ("comm", "pid"), CountTable),
        (ops.count("ts", every=second, clock=event_time), ("ts",), CountTable),
        (ops.log2_histogram("bytes", by="comm"), ("bytes", "comm"), Histogram),
        (ops.linear_histogram(lambda e: e.bytes % 8), (), Histogram),
        (ops.rate(by="pid", every=second, clock=event_time), ("pid", "ts"), WindowResult),
        (Tally(), (), None),
        (doubled(), (), None),
        (ops.merge_by(), (), None),
    ]  # fmt: skip


def test_operators_declare_the_fields_they_read_and_what_they_emit() -> None:
    for op, fields, output in declarations():
        assert op.reads_fields() == fields, op.stage_name()
        assert op.output_type(Read) is output, op.stage_name()
        if output is Read:  # passes events through: whatever comes in
            assert op.output_type(None) is None, op.stage_name()
