"""count(by=...): equal to collections.Counter, bounded, top-N, periodic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.clock import ManualClock
from flowtrace.errors import PipelineDefinitionError
from flowtrace.operators import Sliding, Tumbling, count
from flowtrace.records import CountRow, CountTable, Record
from flowtrace.testing import CollectSink, ListSource, OperatorHarness


class Switch(msgspec.Struct, frozen=True):
    prev_pid: int
    next_pid: int
    comm: str = "x"


def table_of(items: Sequence[object]) -> CountTable:
    [table] = items
    assert isinstance(table, CountTable)
    return table


switches = st.lists(
    st.builds(Switch, st.integers(0, 6), st.integers(0, 6), st.sampled_from("abc")), max_size=400
)


@settings(max_examples=200, deadline=None)
@given(switches, st.integers(1, 64))
def test_count_equals_counter(events: list[Switch], batch: int) -> None:
    h = OperatorHarness(count(["prev_pid", "next_pid"]))
    for i in range(0, len(events), batch):
        h.feed(events[i : i + batch])
    table = table_of(h.finish())
    expected = Counter((e.prev_pid, e.next_pid) for e in events)
    assert {(r.key["prev_pid"], r.key["next_pid"]): r.count for r in table.rows} == expected
    counts = [r.count for r in table.rows]
    assert counts == sorted(counts, reverse=True)
    assert table.key_fields == ["prev_pid", "next_pid"]
    assert h.stats.dropped == {}


@settings(max_examples=200, deadline=None)
@given(switches, st.integers(1, 64), st.integers(1, 10))
def test_bound_keeps_the_first_keys_and_counts_the_rest(
    events: list[Switch], batch: int, max_keys: int
) -> None:
    h = OperatorHarness(count(lambda e: e.prev_pid * 10 + e.next_pid, max_keys=max_keys))
    for i in range(0, len(events), batch):
        h.feed(events[i : i + batch])
    table = table_of(h.finish())
    keys = [e.prev_pid * 10 + e.next_pid for e in events]
    admitted = list(dict.fromkeys(keys))[:max_keys]  # first-seen keys win
    expected = Counter(k for k in keys if k in admitted)
    assert {r.key["key"]: r.count for r in table.rows} == expected
    assert h.stats.dropped.get("key_limit", 0) == len(keys) - sum(expected.values())


@settings(max_examples=100, deadline=None)
@given(switches, st.integers(1, 5))
def test_top_n_keeps_the_highest_and_counts_the_others(events: list[Switch], top: int) -> None:
    h = OperatorHarness(count("comm", top=top))
    h.feed(events)
    table = table_of(h.finish())
    full = Counter(e.comm for e in events)
    assert len(table.rows) == min(top, len(full))
    assert sum(r.count for r in table.rows) + table.others == len(events)
    shown = {r.key["comm"] for r in table.rows}
    assert all(full[k] >= n for k in shown for n in (full[o] for o in full if o not in shown))


def test_ties_keep_first_seen_order() -> None:
    h = OperatorHarness(count("comm"))
    h.feed([Switch(0, 0, c) for c in "bcab"])
    table = table_of(h.finish())
    assert table.rows == [
        CountRow({"comm": "b"}, 2),
        CountRow({"comm": "c"}, 1),
        CountRow({"comm": "a"}, 1),
    ]


def test_periodic_counts_per_interval_with_window_bounds() -> None:
    clock = ManualClock(100.0)
    h = OperatorHarness(count("comm", every=Tumbling(2.0)), clock)
    h.feed([Switch(0, 0, "a")] * 3)
    clock.advance(1.0)
    h.feed([Switch(0, 0, "b")])
    first = h.advance(1.0)  # the first interval ends at 102
    assert first == [
        CountTable(
            rows=[CountRow({"comm": "a"}, 3), CountRow({"comm": "b"}, 1)],
            key_fields=["comm"],
            window_start=100.0,
            window_end=102.0,
        )
    ]
    assert h.advance(2.0) == [
        CountTable(rows=[], key_fields=["comm"], window_start=102.0, window_end=104.0)
    ]
    h.feed([Switch(0, 0, "c")])
    clock.advance(0.5)
    last = table_of(h.finish())
    assert last.rows == [CountRow({"comm": "c"}, 1)]
    assert (last.window_start, last.window_end) == (104.0, 104.5)


def test_sliding_counts_add_up_the_intervals_each_window_covers() -> None:
    h = OperatorHarness(count("comm", every=Sliding(2.0, 1.0)), ManualClock(0.0))
    h.feed([Switch(0, 0, "a")] * 2 + [Switch(0, 0, "b")])
    assert [t.rows for t in map(table_of, [h.advance(1.0)])] == [
        [CountRow({"comm": "a"}, 2), CountRow({"comm": "b"}, 1)]
    ]
    h.feed([Switch(0, 0, "b")] * 2 + [Switch(0, 0, "c")])
    both = table_of(h.advance(1.0))  # [0, 2): both intervals, added up
    assert (both.window_start, both.window_end) == (0.0, 2.0)
    assert both.rows == [
        CountRow({"comm": "b"}, 3), CountRow({"comm": "a"}, 2), CountRow({"comm": "c"}, 1)
    ]  # fmt: skip
    later = table_of(h.advance(1.0))  # [1, 3): the second interval only
    assert later.rows == [CountRow({"comm": "b"}, 2), CountRow({"comm": "c"}, 1)]


@pytest.mark.anyio
async def test_count_in_a_pipeline() -> None:
    events = [Switch(i % 3, (i * 7) % 5) for i in range(10_000)]
    sink = CollectSink[Record]()
    stats = await (
        ListSource(events, batch_size=256) | count(["prev_pid", "next_pid"]) | sink
    ).run()
    table = table_of(list(sink.items))
    assert {(r.key["prev_pid"], r.key["next_pid"]): r.count for r in table.rows} == Counter(
        (e.prev_pid, e.next_pid) for e in events
    )
    assert (stats.stages[1].received, stats.stages[1].emitted) == (10_000, 1)


def test_a_key_function_names_its_column_or_is_called_key() -> None:
    def pair(e: Switch) -> tuple[int, int]:
        return (e.prev_pid, e.next_pid)

    class ByComm:  # a callable without a __name__
        def __call__(self, e: Switch) -> str:
            return e.comm

    keys: list[tuple[Callable[[Switch], Hashable], str]] = [
        (pair, "pair"), (lambda e: e.comm, "key"), (ByComm(), "key")
    ]  # fmt: skip
    for by, column in keys:
        h = OperatorHarness(count(by))
        h.feed([Switch(1, 2, "a")])
        table = table_of(h.finish())
        assert table.key_fields == [column]
        assert [row.key for row in table.rows] == [{column: by(Switch(1, 2, "a"))}]


def test_bad_arguments() -> None:
    with pytest.raises(PipelineDefinitionError, match="top must be a positive integer"):
        count("comm", top=0)
    with pytest.raises(PipelineDefinitionError, match="a key is a field name"):
        count([])
    with pytest.raises(PipelineDefinitionError, match="repeat a field"):
        count(["pid", "pid"])
    with pytest.raises(
        PipelineDefinitionError, match="Tumbling: length must be a positive number, got 0"
    ):
        count("comm", every=Tumbling(0))
