"""Windows on a virtual clock: tumbling and sliding, processing and event
time, lateness, limits, end of stream; each checked against a reference."""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowtrace.operators as ops
from flowtrace.clock import ManualClock
from flowtrace.errors import PipelineDefinitionError
from flowtrace.operators import (
    Collect,
    Count,
    CountBy,
    EventTime,
    Linear,
    Log2,
    Max,
    Min,
    Rate,
    Sliding,
    Sum,
    Tumbling,
    log2_histogram,
    window,
)
from flowtrace.operators.windows import MAX_EMPTY_RUN
from flowtrace.records import (
    EmptyWindows,
    Histogram,
    JoinIncomplete,
    LateEvent,
    Record,
    WindowResult,
)
from flowtrace.testing import CollectSink, ListSource, OperatorHarness


class Ev(msgspec.Struct, frozen=True):
    n: int  # a unique id, so multisets are sets
    ts: int = 0
    comm: str = "a"
    size: int = 1


def collected(items: list[Any]) -> list[WindowResult]:
    return [r for r in items if isinstance(r, WindowResult)]


# -- processing time ----------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 7.25]), st.integers(0, 5)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.sampled_from([1.0, 2.0, 0.5]))
def test_tumbling_processing_time_windows_partition_the_events(
    schedule: list[tuple[float, int]], size: float
) -> None:
    clock = ManualClock(10.0)
    h = OperatorHarness(window(Collect(), every=Tumbling(size)), clock)
    fed_at: dict[int, float] = {}
    n = 0
    for dt, count in schedule:
        h.advance(dt)
        batch = [Ev(n + i) for i in range(count)]
        n += count
        for e in batch:
            fed_at[e.n] = clock.now()
        h.feed(batch)
    h.finish()
    windows = collected(h.emitted)
    # every event exactly once, in order
    assert [e.n for w in windows for e in w.value] == list(range(n))
    # each in the window of the time it arrived
    for w in windows:
        assert w.window_start is not None and w.window_end is not None
        for e in w.value:
            assert (
                w.window_start <= fed_at[e.n] < w.window_end
                or fed_at[e.n] == w.window_end == clock.now()
            )
    # one window per interval, consecutive, including empty ones; a run of
    # more than MAX_EMPTY_RUN empty ones is one EmptyWindows record
    starts: list[float | None] = []
    for r in h.emitted:
        if isinstance(r, EmptyWindows):
            assert r.windows > MAX_EMPTY_RUN and r.step == size
            assert r.window_end == r.window_start + r.windows * size  # type: ignore[operator]
            starts += [r.window_start + i * size for i in range(r.windows)]  # type: ignore[operator]
        elif isinstance(r, WindowResult):
            starts.append(r.window_start)
    assert starts == [10.0 + i * size for i in range(len(starts))]
    assert len(starts) == int((clock.now() - 10.0) // size) + 1


def reference_sliding(
    arrivals: list[tuple[float, int]], end: float, size: float, every: float
) -> tuple[list[tuple[float, float, list[int]]], list[tuple[float, float, list[int]]]]:
    """Sliding processing-time windows from open (time 0) to ``end``, in
    exact arithmetic: the windows a tick emits (those ending by ``end``,
    ``[max(0, e - size), e)`` for each multiple ``e`` of ``every``), then the
    one still open at the end, ``[max(0, e - size), end]`` for the next
    multiple ``e``, unless it repeats the last window exactly."""
    t_end, t_size, t_every = Fraction(end), Fraction(size), Fraction(every)

    def ids(low: Fraction, high: Fraction, closed: bool) -> list[int]:
        return [i for t, i in arrivals if low <= t and (t <= high if closed else t < high)]

    ticked = []
    e = t_every
    while e <= t_end:
        low = max(Fraction(0), e - t_size)
        ticked.append((float(low), float(e), ids(low, e, closed=False)))
        e += t_every
    low = max(Fraction(0), e - t_size)
    final = (float(low), end, ids(low, t_end, closed=True))
    return ticked, ([] if ticked and ticked[-1] == final else [final])


def expand_empty_runs(items: list[Any], size: float) -> list[WindowResult]:
    """The window results, each :class:`EmptyWindows` record (a run of more
    than MAX_EMPTY_RUN empty windows) replaced by the empty windows it
    stands for (windows ``size`` long, none starting before 0)."""
    out: list[WindowResult] = []
    for r in items:
        if isinstance(r, EmptyWindows):
            assert r.windows > MAX_EMPTY_RUN and r.window_end is not None
            for k in range(r.windows):
                end = r.window_end - (r.windows - 1 - k) * r.step
                out.append(
                    WindowResult(
                        aggregate="collect",
                        value=[],
                        window_start=max(0.0, end - size),
                        window_end=end,
                    )
                )
        elif isinstance(r, WindowResult):
            out.append(r)
    return out


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from([(2.0, 1.0), (3.0, 1.0), (1.0, 0.5), (2.0, 2.0), (4.0, 0.5)]))
def test_sliding_processing_time_windows_are_exactly_the_reference(
    schedule: list[tuple[float, int]], shape: tuple[float, float]
) -> None:
    size, every = shape
    clock = ManualClock(0.0)
    h = OperatorHarness(window(Collect(), every=Sliding(size, every)), clock)
    arrivals: list[tuple[float, int]] = []
    n = 0
    for dt, count in schedule:
        h.advance(dt)
        h.feed([Ev(n + i) for i in range(count)])
        arrivals += [(clock.now(), n + i) for i in range(count)]
        n += count
    end = clock.now()
    before_end = [
        (w.window_start, w.window_end, [e.n for e in w.value])
        for w in expand_empty_runs(h.emitted, size)
    ]
    at_end = [(w.window_start, w.window_end, [e.n for e in w.value]) for w in collected(h.finish())]
    ticked, final = reference_sliding(arrivals, end, size, every)
    assert before_end == ticked  # each window as soon as its end passed
    assert at_end == final  # the open window, once, cut at the end
    # every event is in at least one window, no window is repeated
    windows = before_end + at_end
    assert {i for _, _, ids in windows for i in ids} == set(range(n))
    assert len({(a, b, tuple(ids)) for a, b, ids in windows}) == len(windows)


def test_sliding_window_at_end_of_stream_is_emitted_once() -> None:
    """A 3 s window every 1 s that ends after 0.5 s: one window, not three
    copies of it."""
    clock = ManualClock()
    h = OperatorHarness(window(Count(), every=Sliding(3.0, 1.0)), clock)
    h.feed([Ev(1), Ev(2)])
    clock.advance(0.5)
    assert [(r.window_start, r.window_end, r.value) for r in collected(h.finish())] == [
        (0.0, 0.5, 2)
    ]
    h = OperatorHarness(window(Count(), every=Sliding(3.0, 1.0)), clock := ManualClock())
    h.feed([Ev(1)])
    out = h.advance(1.0)
    h.feed([Ev(2)])  # arrives at 1.0, the very end: its own window, cut there
    out += h.finish()
    assert [(r.window_start, r.window_end, r.value) for r in collected(out)] == [
        (0.0, 1.0, 1),
        (0.0, 1.0, 2),
    ]
    h = OperatorHarness(window(Count(), every=Sliding(3.0, 1.0)), clock := ManualClock())
    h.feed([Ev(1)])
    out = h.advance(1.0) + h.finish()  # nothing new at the end: no repeat
    assert [(r.window_start, r.window_end, r.value) for r in collected(out)] == [(0.0, 1.0, 1)]
    h = OperatorHarness(window(Count(), every=Sliding(2.0, 1.0), by="comm"), clock := ManualClock())
    h.feed([Ev(1, comm="a")])
    clock.advance(2.25)
    out = h.feed([Ev(2, comm="b")]) + h.finish()
    assert [(r.window_start, r.window_end, r.key, r.value) for r in collected(out)] == [
        (0.0, 1.0, {"comm": "a"}, 1),
        (0.0, 2.0, {"comm": "a"}, 1),
        (1.0, 2.25, {"comm": "b"}, 1),
    ]


def test_decimal_intervals_end_on_the_tick_on_a_virtual_clock() -> None:
    """Ten steps of 0.1 s: ten windows, each emitted on its own tick."""
    clock = ManualClock()
    h = OperatorHarness(window(Count(), every=Tumbling(0.1)), clock)
    per_step = []
    for i in range(10):
        h.feed([Ev(i)])
        per_step.append(
            [(r.window_start, r.window_end, r.value) for r in collected(h.advance(0.1))]
        )
    assert per_step == [[(k / 10, (k + 1) / 10, 1)] for k in range(10)]
    h = OperatorHarness(window(Count(), every=Sliding(0.3, 0.1)), clock := ManualClock(7.3))
    emitted = [len(collected(h.advance(0.1))) for _ in range(30)]
    assert emitted == [1] * 30


SECONDLY = Tumbling(1.0)


def test_every_windowed_factory_takes_emit_late() -> None:
    late_batch = [Ev(1, ts=5 * SECOND), Ev(2, ts=7 * SECOND)]
    factories: dict[str, Callable[[bool], ops.Window[Any]]] = {
        "count": lambda late: ops.count("comm", every=SECONDLY, clock=EventTime("ts", 0, late)),
        "log2": lambda late: log2_histogram("size", every=SECONDLY, clock=EventTime("ts", 0, late)),
        "linear": lambda late: ops.linear_histogram(
            "size", every=SECONDLY, clock=EventTime("ts", 0, late)
        ),
        "rate": lambda late: ops.rate(every=SECONDLY, clock=EventTime("ts", 0, late)),
    }
    for name, make in factories.items():
        for emit_late in (True, False):
            h = OperatorHarness(make(emit_late))
            h.feed(late_batch)
            out = h.feed([Ev(3, ts=2 * SECOND)])
            assert [r.event.n for r in out if isinstance(r, LateEvent)] == (
                [3] if emit_late else []
            ), name
            assert h.stats.dropped == {"late": 1}, name


def test_processing_time_emits_empty_windows_and_the_current_one_at_end() -> None:
    clock = ManualClock()
    h = OperatorHarness(window(Count(), every=Tumbling(1.0)), clock)
    h.feed([Ev(1), Ev(2)])
    out = h.advance(3.0)  # one tick, three windows due
    assert [(r.window_start, r.window_end, r.value) for r in collected(out)] == [
        (0.0, 1.0, 2),
        (1.0, 2.0, 0),
        (2.0, 3.0, 0),
    ]
    clock.advance(0.25)
    assert [(r.window_start, r.window_end, r.value) for r in collected(h.finish())] == [
        (3.0, 3.25, 0)
    ]


def test_scalar_aggregates_per_window_and_key() -> None:
    clock = ManualClock()
    events = [Ev(1, comm="a", size=5), Ev(2, comm="b", size=1), Ev(3, comm="a", size=7)]
    results = {}
    for agg in (Count(), Sum("size"), Min("size"), Max("size"), Rate()):
        h = OperatorHarness(window(agg, every=Tumbling(2.0), by="comm"), clock := ManualClock())
        h.feed(events)
        out = collected(h.advance(2.0))
        results[agg.name] = [(r.key, r.value) for r in out]
    assert results == {
        "count": [({"comm": "a"}, 2), ({"comm": "b"}, 1)],
        "sum": [({"comm": "a"}, 12), ({"comm": "b"}, 1)],
        "min": [({"comm": "a"}, 5), ({"comm": "b"}, 1)],
        "max": [({"comm": "a"}, 7), ({"comm": "b"}, 1)],
        "rate": [({"comm": "a"}, 1.0), ({"comm": "b"}, 0.5)],
    }
    h = OperatorHarness(window(Max("size"), every=Tumbling(1.0)), clock)
    assert [r.value for r in collected(h.advance(1.0))] == [None]  # empty window


def test_sliding_scalar_aggregates_merge_the_intervals_each_window_covers() -> None:
    results = {}
    for agg in (Count(), Sum("size"), Min("size"), Max("size"), Rate()):
        h = OperatorHarness(window(agg, every=Sliding(2.0, 1.0)), ManualClock(0.0))
        h.feed([Ev(1, size=5), Ev(2, size=9)])
        emitted = h.advance(1.0)
        h.feed([Ev(3, size=7)])
        emitted += h.advance(1.0) + h.advance(1.0) + h.advance(1.0)
        results[agg.name] = [(r.window_start, r.window_end, r.value) for r in collected(emitted)]
    assert results == {
        "count": [(0.0, 1.0, 2), (0.0, 2.0, 3), (1.0, 3.0, 1), (2.0, 4.0, 0)],
        "sum": [(0.0, 1.0, 14), (0.0, 2.0, 21), (1.0, 3.0, 7), (2.0, 4.0, 0)],
        "min": [(0.0, 1.0, 5), (0.0, 2.0, 5), (1.0, 3.0, 7), (2.0, 4.0, None)],
        "max": [(0.0, 1.0, 9), (0.0, 2.0, 9), (1.0, 3.0, 7), (2.0, 4.0, None)],
        "rate": [(0.0, 1.0, 2.0), (0.0, 2.0, 1.5), (1.0, 3.0, 0.5), (2.0, 4.0, 0.0)],
    }


@pytest.mark.parametrize(
    "aggregate",
    [
        Count(), Rate(), Sum("size"), Min("size"), Max("size"), Collect(), CountBy("comm"),
        Log2("size"), Linear("size"),
    ],
    ids=lambda a: type(a).__name__,
)
def test_an_aggregate_leaves_its_accumulator_as_it_was_for_an_empty_batch(
    aggregate: Any,
) -> None:
    """The Aggregate contract, as a custom window calling ``add`` directly sees it."""
    empty = aggregate.new()
    assert aggregate.add(aggregate.new(), []) == empty
    filled = aggregate.add(aggregate.new(), [Ev(1, size=3), Ev(2, size=9)])
    assert aggregate.add(copy.copy(filled), []) == filled


def test_min_and_max_keep_the_first_of_equal_values_whatever_the_batches() -> None:
    """As Python's min and max do: 1.0 and 1 are equal, the first one stays."""

    class Value(msgspec.Struct, frozen=True):
        v: float

    for aggregate in (Min("v"), Max("v")):
        for batches in ([[Value(1.0), Value(1)]], [[Value(1.0)], [Value(1)]]):
            h = OperatorHarness(window(aggregate))
            for batch in batches:
                h.feed(batch)
            [result] = collected(h.finish())
            assert (result.value, type(result.value)) == (1.0, float)


def test_collect_keeps_at_most_max_items_per_interval_across_batches() -> None:
    h = OperatorHarness(window(Collect(max_items=3)))
    h.feed([Ev(1), Ev(2)])
    h.feed([Ev(3), Ev(4)])
    h.feed([Ev(5)])
    [result] = collected(h.finish())
    assert [e.n for e in result.value] == [1, 2, 3]
    assert h.stats.dropped == {"collect_limit": 2}


def test_min_and_max_merge_only_the_accumulators_that_saw_events() -> None:
    assert (Min("size").merge([None, 4, None, 2]), Max("size").merge([None, 4, None, 2])) == (2, 4)
    assert (Min("size").merge([None, None]), Max("size").merge([])) == (None, None)


def test_whole_stream_histogram_per_key_at_end() -> None:
    clock = ManualClock(5.0)
    h = OperatorHarness(log2_histogram("size", unit="kbytes", by="comm"), clock)
    assert h.feed([Ev(1, comm="b", size=4), Ev(2, comm="a", size=1), Ev(3, comm="b", size=5)]) == []
    assert h.advance(100.0) == []
    out = h.finish()
    assert [
        (r.key, [(b.low, b.count) for b in r.buckets]) for r in out if isinstance(r, Histogram)
    ] == [
        ({"comm": "b"}, [(4, 2)]),
        ({"comm": "a"}, [(0, 1)]),
    ]
    assert all((r.window_start, r.window_end) == (5.0, 105.0) for r in out)


def test_key_limit_per_interval_is_counted() -> None:
    h = OperatorHarness(window(Count(), by="comm", max_keys=2))
    h.feed([Ev(i, comm=c) for i, c in enumerate("abcacd")])
    out = collected(h.finish())
    assert [(r.key, r.value) for r in out] == [({"comm": "a"}, 2), ({"comm": "b"}, 1)]
    assert h.stats.dropped == {"key_limit": 3}


def test_side_records_pass_through_unchanged() -> None:
    side = JoinIncomplete(key={"k": 1}, start=Ev(0), reason="timeout", waited=1.0)
    h = OperatorHarness(window(Count()))
    assert h.feed([Ev(1), side, Ev(2)]) == [side]
    assert [r.value for r in collected(h.finish())] == [2]


# -- event time ---------------------------------------------------------

SECOND = 1_000_000_000

stamped = st.lists(st.integers(0, 20 * SECOND), max_size=150)


def reference_event_time(
    stamps: list[int], batch: int, size: int, lateness: int
) -> tuple[dict[int, list[int]], set[int]]:
    """Tumbling event-time windows, simulated: window start -> event ids,
    and the ids of late events (all their windows closed by the watermark of
    the batches before theirs)."""
    windows: dict[int, list[int]] = defaultdict(list)
    late: set[int] = set()
    newest: int | None = None
    for b in range(0, len(stamps), batch):
        part = list(enumerate(stamps))[b : b + batch]
        for i, ts in part:
            start = ts // size * size
            if newest is not None and start + size <= newest - lateness:
                late.add(i)
            else:
                windows[start].append(i)
        newest = max([ts for _, ts in part] + ([newest] if newest is not None else []))
    return dict(windows), late


@settings(max_examples=200, deadline=None)
@given(stamped, st.integers(1, 20), st.sampled_from([1, 2, 5]), st.sampled_from([0, 1, 3]))
def test_event_time_tumbling_windows_partition_the_events(
    stamps: list[int], batch: int, size_s: int, lateness_s: int
) -> None:
    op = window(
        Collect(), every=Tumbling(size_s), clock=EventTime("ts", lateness=float(lateness_s))
    )
    h = OperatorHarness(op)
    events = [Ev(i, ts) for i, ts in enumerate(stamps)]
    for b in range(0, len(events), batch):
        h.feed(events[b : b + batch])
    h.finish()
    windows, late = reference_event_time(stamps, batch, size_s * SECOND, lateness_s * SECOND)
    got = {round(w.window_start * 1e9): [e.n for e in w.value] for w in collected(h.emitted)}  # type: ignore[operator]
    assert got == windows
    assert {r.event.n for r in h.emitted if isinstance(r, LateEvent)} == late
    assert h.stats.dropped.get("late", 0) == len(late)
    # windows come out oldest first and each holds only its own time range
    starts = [w.window_start or 0.0 for w in collected(h.emitted)]
    assert starts == sorted(starts)
    for w in collected(h.emitted):
        assert all(round(w.window_start * 1e9) <= e.ts < round(w.window_end * 1e9) for e in w.value)  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(stamped, st.integers(1, 20), st.sampled_from([(4, 1), (2, 1), (6, 2)]))
def test_event_time_sliding_windows_hold_each_event_size_over_slide_times(
    stamps: list[int], batch: int, shape: tuple[int, int]
) -> None:
    size, every = shape
    op = window(Collect(), every=Sliding(size, every), clock=EventTime("ts", lateness=100.0))
    h = OperatorHarness(op)
    events = [Ev(i, ts) for i, ts in enumerate(stamps)]
    for b in range(0, len(events), batch):
        h.feed(events[b : b + batch])
    h.finish()
    seen = Counter(e.n for w in collected(h.emitted) for e in w.value)
    assert seen == Counter(dict.fromkeys(range(len(stamps)), size // every))
    for w in collected(h.emitted):
        assert all(round(w.window_start * 1e9) <= e.ts < round(w.window_end * 1e9) for e in w.value)  # type: ignore[operator]
    assert not any(isinstance(r, LateEvent) for r in h.emitted)


def test_late_events_are_counted_and_passed_on_or_only_counted() -> None:
    for emit_late in (True, False):
        clock = EventTime("ts", emit_late=emit_late)
        h = OperatorHarness(window(Count(), every=Tumbling(1.0), clock=clock))
        first = h.feed([Ev(1, 5 * SECOND + 10)])
        assert first == []
        out = h.feed([Ev(2, 7 * SECOND), Ev(3, 2 * SECOND)])
        assert [(r.window_start, r.value) for r in collected(out)] == [(5.0, 1)]
        late = [r for r in out if isinstance(r, LateEvent)]
        assert [(r.event.n, r.window_start, r.watermark) for r in late] == (
            [(3, 2.0, 5.00000001)] if emit_late else []
        )
        assert h.stats.dropped == {"late": 1}
        assert [(r.window_start, r.value) for r in collected(h.finish())] == [(7.0, 1)]


# -- limit and stopping -------------------------------------------------


def test_limit_emits_that_many_windows_then_asks_to_stop() -> None:
    clock = ManualClock()
    h = OperatorHarness(window(Count(), every=Tumbling(1.0), limit=2), clock)
    h.feed([Ev(1)])
    assert not h.pipeline_stop_requested
    out = h.advance(1.0)
    h.feed([Ev(2), Ev(3)])
    out += h.advance(1.0)
    h.feed([Ev(4)])
    assert h.pipeline_stop_requested
    assert [r.value for r in collected(out)] == [1, 2]
    assert h.finish() == []
    assert h.stats.dropped == {"after_limit": 1}


def test_a_batch_that_closes_the_last_window_of_the_limit_is_counted_not_folded() -> None:
    clock = ManualClock(0.0)
    h = OperatorHarness(window(Count(), every=Tumbling(1.0), limit=1), clock)
    h.feed([Ev(1)])
    clock.advance(1.5)  # no tick: the next batch is the first to see window 0 ended
    out = h.feed([Ev(2), Ev(3), Ev(4)])
    assert [(r.window_start, r.window_end, r.value) for r in collected(out)] == [(0.0, 1.0, 1)]
    assert h.pipeline_stop_requested
    assert h.stats.dropped == {"after_limit": 3}


def test_events_over_the_key_bound_are_not_counted_again_after_the_limit() -> None:
    h = OperatorHarness(
        window(Count(), every=Tumbling(1.0), clock=EventTime("ts"), by="comm", max_keys=1, limit=1)
    )
    second = 1_000_000_000
    batch = [Ev(1, ts=0), Ev(2, ts=second), Ev(3, ts=second, comm="b"),
             Ev(4, ts=second + 5, comm="b"), Ev(5, ts=9 * second)]  # fmt: skip
    out = h.feed(batch)
    assert [(r.window_start, r.key, r.value) for r in collected(out)] == [(0.0, {"comm": "a"}, 1)]
    # window 1 kept one event of a (b's two were over the bound), window 9 one
    assert h.stats.dropped == {"key_limit": 2, "after_limit": 2}


def test_windows_of_one_nanosecond_are_exact() -> None:
    h = OperatorHarness(window(Count(), every=Tumbling(1e-9), clock=EventTime("ts")))
    out = h.feed([Ev(1, ts=0), Ev(2, ts=1), Ev(3, ts=1), Ev(4, ts=2), Ev(5, ts=4)])
    out += h.finish()
    assert [(r.window_start, r.value) for r in collected(out)] == [
        (0.0, 1), (1e-9, 2), (2e-9, 1), (4e-9, 1)
    ]  # fmt: skip
    clock = ManualClock(0.0)
    h = OperatorHarness(window(Count(), every=Tumbling(1e-9)), clock)
    out = h.feed([Ev(1)])
    clock.advance(1e-9)
    out += h.feed([Ev(2), Ev(3)])
    clock.advance(2e-9)
    assert [r.value for r in collected(out + h.feed([]) + h.finish())] == [1, 2, 0, 0]


def test_event_time_stops_at_the_limit_within_one_batch() -> None:
    h = OperatorHarness(window(Count(), every=Tumbling(1.0), clock=EventTime("ts"), limit=1))
    second = 1_000_000_000
    out = h.feed([Ev(1, ts=0), Ev(2, ts=second), Ev(3, ts=second + 1), Ev(4, ts=9 * second)])
    assert [(r.window_start, r.window_end, r.value) for r in collected(out)] == [(0.0, 1.0, 1)]
    assert h.pipeline_stop_requested
    assert h.stats.dropped == {"after_limit": 3}  # window 1's two and the newest
    assert h.finish() == []


@pytest.mark.anyio
async def test_limit_stops_a_live_pipeline_after_n_windows() -> None:
    """vfsreadlat's count: three histograms, then the pipeline ends by itself."""
    source = ListSource([Ev(i, size=i) for i in range(100_000)], batch_size=10, interval=0.005)
    sink = CollectSink[Record]()
    pipeline = source | log2_histogram("size", unit="usecs", every=Tumbling(0.05), limit=3) | sink
    with anyio.fail_after(30):
        stats = await pipeline.run()
    assert len([r for r in sink.items if isinstance(r, Histogram)]) == 3
    assert stats.stages[0].received < 100_000
    hist = stats.stages[1]
    # every event read was either in an emitted histogram or counted
    emitted_events = sum(r.total for r in sink.items if isinstance(r, Histogram))
    assert emitted_events + hist.dropped.get("after_limit", 0) == hist.received


@pytest.mark.anyio
async def test_limit_stops_a_pipeline_without_ticks() -> None:
    """Event time has no tick: the stop request is acted on after process()."""
    events = [Ev(i, ts=i * SECOND // 10) for i in range(100_000)]  # ten per second
    source = ListSource(events, batch_size=5, interval=0.001)
    sink = CollectSink[Record]()
    with anyio.fail_after(30):
        op = window(Count(), every=Tumbling(1.0), clock=EventTime("ts"), limit=2)
        stats = await (source | op | sink).run()
    assert [(r.window_start, r.value) for r in collected(sink.items)] == [(0.0, 10), (1.0, 10)]
    assert stats.stages[0].received < 100_000
    counted = stats.stages[1]
    assert counted.received == 20 + counted.dropped["after_limit"]


def test_bad_window_definitions() -> None:
    with pytest.raises(PipelineDefinitionError, match="not a whole multiple"):
        Sliding(3.0, 2.0)
    with pytest.raises(PipelineDefinitionError, match="need windows; pass every=Tumbling"):
        window(Count(), clock=EventTime("ts"))
    with pytest.raises(PipelineDefinitionError, match="need windows; pass every=Tumbling"):
        window(Count(), limit=3)
    with pytest.raises(PipelineDefinitionError, match="keyed already"):
        window(CountBy("comm"), every=Tumbling(1.0), by="comm")
    with pytest.raises(PipelineDefinitionError, match="lateness must be >= 0"):
        EventTime("ts", lateness=-1)
    with pytest.raises(PipelineDefinitionError, match="'t s' is not a field name"):
        EventTime("t s")
    with pytest.raises(PipelineDefinitionError, match="Sliding: step must be a positive number"):
        Sliding(1.0, 0)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^window\(count\): every=1\.0 is not a windower; pass every=Tumbling\(1\.0\)",
    ):
        window(Count(), every=1.0)  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError, match=r"^count: clock='ts' is not a clock; pass clock="
    ):
        ops.count("comm", every=Tumbling(1.0), clock="ts")  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="rate: limit must be a positive integer"):
        ops.rate(limit=0)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"Collect\(max_items=0\): max_items must be a positive integer",
    ):
        Collect(0)
