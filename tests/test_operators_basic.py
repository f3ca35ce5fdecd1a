"""filter, map, flat_map and field predicates, against plain Python."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.errors import PipelineDefinitionError, StageError
from flowtrace.kernel_forms import Comparison
from flowtrace.operators import (
    AllOf,
    AnyOf,
    Compare,
    F,
    Not,
    Predicate,
    Sum,
    count,
    distinct,
    field,
    filter,
    flat_map,
    join,
    log2_histogram,
    map,
    running_count,
    window,
)
from flowtrace.records import JoinIncomplete
from flowtrace.testing import CollectSink, ListSource, OperatorHarness


class Proc(msgspec.Struct, frozen=True):
    pid: int
    comm: str
    uid: int = 0


procs = st.lists(
    st.builds(Proc, st.integers(0, 50), st.sampled_from(["bash", "sh", "vi"]), st.integers(0, 2)),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(procs, st.integers(0, 50), st.sets(st.sampled_from(["bash", "sh", "vi"])))
def test_field_predicates_mean_what_python_means(
    events: list[Proc], pid: int, comms: set[str]
) -> None:
    cases: list[tuple[Predicate, Callable[[Proc], bool]]] = [
        (F.pid == pid, lambda e: e.pid == pid),
        (F.pid != pid, lambda e: e.pid != pid),
        (F.pid < pid, lambda e: e.pid < pid),
        (F.pid <= pid, lambda e: e.pid <= pid),
        (F.pid > pid, lambda e: e.pid > pid),
        (F.pid >= pid, lambda e: e.pid >= pid),
        (F.comm.isin(comms), lambda e: e.comm in comms),
        (F.comm.notin(comms), lambda e: e.comm not in comms),
        (F.comm.startswith("b"), lambda e: e.comm.startswith("b")),
        ((F.pid > pid) & (F.uid == 0), lambda e: e.pid > pid and e.uid == 0),
        ((F.pid > pid) | F.comm.isin(comms), lambda e: e.pid > pid or e.comm in comms),
        (~(F.uid == 1), lambda e: e.uid != 1),
    ]
    for predicate, reference in cases:
        expected = [e for e in events if reference(e)]
        assert [e for e in events if predicate(e)] == expected
        assert OperatorHarness(filter(predicate)).feed(events) == expected


def test_predicates_are_data() -> None:
    p = (F.pid == 42) & F.comm.isin({"sh", "bash"}) & ~(field("uid") == 0)
    assert isinstance(p, AllOf)
    first, second, third = p.parts
    assert (first.field, first.op, first.value) == ("pid", "==", 42)  # type: ignore[attr-defined]
    assert (second.field, second.op, second.value) == ("comm", "in", frozenset({"sh", "bash"}))  # type: ignore[attr-defined]
    assert isinstance(third, Not)
    assert p.fields() == ("pid", "comm", "uid")
    assert ((F.b > 1) | (F.a == 2) | ~(F.b < 0)).fields() == ("b", "a")
    assert repr(p) == "(F.pid == 42) & (F.comm in ['bash', 'sh']) & (~(F.uid == 0))"
    op = filter(p)
    assert op.predicate is p
    assert filter(lambda e: True).predicate is None
    kw = filter(pid=42, comm="sh").predicate
    assert isinstance(kw, AllOf)
    assert [(c.field, c.op, c.value) for c in kw.parts] == [("pid", "==", 42), ("comm", "==", "sh")]  # type: ignore[attr-defined]


def test_startswith_and_empty_combinations_read_as_written() -> None:
    prefix = F.comm.startswith("ba")
    assert repr(prefix) == "F.comm.startswith('ba')"
    assert prefix.kernel_condition() == Comparison("comm", "startswith", "ba")
    assert repr(AnyOf(())) == "AnyOf(())" and repr(AllOf(())) == "AllOf(())"
    assert repr(F.pid.notin({3, 1})) == "F.pid not in [1, 3]"
    with pytest.raises(PipelineDefinitionError) as raised:
        F.comm.startswith(3)  # type: ignore[arg-type]
    assert str(raised.value) == "F.comm.startswith takes a string, got int"
    with pytest.raises(PipelineDefinitionError) as raised:
        field("comm name")
    assert str(raised.value) == "'comm name' is not a field name"


@pytest.mark.anyio
async def test_filter_map_flat_map_in_a_pipeline() -> None:
    events = [Proc(i, "bash" if i % 3 else "sh") for i in range(1000)]
    sink = CollectSink[int]()
    pipeline = (
        ListSource(events, batch_size=64)
        | filter(F.comm == "bash")
        | map(lambda e: e.pid)
        | flat_map(lambda pid: [pid] * (pid % 3))
        | sink
    )
    stats = await pipeline.run()
    expected = [p for e in events if e.comm == "bash" for p in [e.pid] * (e.pid % 3)]
    assert sink.items == expected
    assert [(s.received, s.emitted) for s in stats.stages[1:4]] == [
        (1000, 666),
        (666, 666),
        (666, len(expected)),
    ]
    assert stats.dropped == 0


@pytest.mark.anyio
async def test_missing_field_fails_with_a_line_naming_it() -> None:
    pipeline = ListSource([Proc(1, "sh")]) | filter(F.tid == 3) | CollectSink[Proc]()
    with pytest.raises(
        StageError, match=r"event Proc has no field 'tid'; its fields are pid, comm, uid"
    ):
        await pipeline.run()


def test_bad_definitions() -> None:
    with pytest.raises(
        PipelineDefinitionError, match="filter expects a function or a field predicate"
    ):
        filter(42)  # type: ignore[call-overload]
    with pytest.raises(PipelineDefinitionError, match="not both"):
        filter(F.pid == 1, comm="sh")  # type: ignore[call-overload]
    with pytest.raises(PipelineDefinitionError, match="needs a predicate"):
        filter()
    with pytest.raises(PipelineDefinitionError, match="cannot combine a field predicate"):
        (F.pid == 1) & (lambda e: True)  # type: ignore[operator]
    with pytest.raises(PipelineDefinitionError, match="unknown comparison '=~'"):
        Compare("comm", "=~", "x")
    with pytest.raises(PipelineDefinitionError, match="map expects a function"):
        map("pid")  # type: ignore[arg-type]


def test_side_records_pass_filter_map_flat_map_ahead_of_results() -> None:
    """A side record (here an incomplete join, which has no pid) is never
    handed to the predicate or function: it comes out unchanged, ahead of
    the results of its batch."""
    side = JoinIncomplete(key={"pid": 9}, start=Proc(9, "sh"), reason="timeout", waited=1.0)
    batch: list[Any] = [Proc(1, "sh"), side, Proc(2, "bash"), Proc(3, "sh"), side]
    assert OperatorHarness(filter(F.comm == "sh")).feed(batch) == [
        side,
        side,
        Proc(1, "sh"),
        Proc(3, "sh"),
    ]
    assert OperatorHarness(filter(lambda e: e.pid > 1)).feed(batch) == [
        side,
        side,
        Proc(2, "bash"),
        Proc(3, "sh"),
    ]
    assert OperatorHarness(map(lambda e: e.pid)).feed(batch) == [side, side, 1, 2, 3]
    assert OperatorHarness(flat_map(lambda e: [e.pid] * (e.pid - 1))).feed(batch) == [
        side,
        side,
        2,
        3,
        3,
    ]
    assert OperatorHarness(filter(pid=2)).feed([side]) == [side]


@pytest.mark.anyio
async def test_filter_after_a_join_passes_its_incomplete_records() -> None:
    """join | filter(F.latency_ns > X): a re-issued request's incomplete
    reaches the sink instead of failing the filter."""

    class Issue(msgspec.Struct, frozen=True):
        ts: int
        sector: int

    class Done(msgspec.Struct, frozen=True):
        ts: int
        sector: int

    events = [Issue(0, 1), Issue(5, 1), Done(2_000_000, 1), Issue(7, 2), Done(9, 2)]
    sink = CollectSink[Any]()
    await (
        ListSource(events)
        | join(Issue, Done, key="sector")
        | filter(F.latency_ns > 1_000_000)
        | sink
    ).run()
    assert [type(r).__name__ for r in sink.items] == ["JoinIncomplete", "JoinPair"]
    replaced, slow = sink.items
    assert (replaced.reason, replaced.start) == ("replaced", Issue(0, 1))
    assert slow.latency_ns == 2_000_000 - 5


@pytest.mark.parametrize(
    ("operator", "stage"),
    [
        (map(lambda e: e.tid), "map"),
        (flat_map(lambda e: [e.tid]), "flat_map"),
        (distinct("tid"), "distinct"),
        (join(lambda e: e.pid == 1, lambda e: e.pid == 2, key="tid", time_field=None), "join"),
        (running_count("tid", time="pid"), "running_count"),
        (running_count(time="tid"), "running_count"),
        (count("tid"), "count"),
        (log2_histogram("tid", by="comm"), "log2_histogram"),
        (window(Sum("pid"), by="tid", name="sums"), "sums"),
    ],
)
def test_each_operator_names_a_missing_field_in_one_line(operator: Any, stage: str) -> None:
    h = OperatorHarness(operator)
    with pytest.raises(PipelineDefinitionError) as raised:
        h.feed([Proc(1, "sh")])
    assert str(raised.value) == (
        f"{stage}: event Proc has no field 'tid'; its fields are pid, comm, uid"
    )


def test_an_attribute_error_not_about_an_event_field_is_left_as_it_is() -> None:
    h: OperatorHarness[Any, Any] = OperatorHarness(map(lambda e: e.comm.tid))
    with pytest.raises(AttributeError, match="'str' object has no attribute 'tid'"):
        h.feed([Proc(1, "sh")])
