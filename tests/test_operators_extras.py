"""rate, sample, distinct, throttle on synthetic events and a virtual clock."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.clock import ManualClock
from flowtrace.errors import PipelineDefinitionError
from flowtrace.operators import Sliding, Tumbling, distinct, rate, sample, throttle
from flowtrace.records import JoinIncomplete, Record, WindowResult
from flowtrace.testing import OperatorHarness


class Ev(msgspec.Struct, frozen=True):
    n: int
    comm: str = "a"


def test_rate_is_events_per_second_per_interval() -> None:
    clock = ManualClock()
    h = OperatorHarness(rate(every=Tumbling(2.0)), clock)
    h.feed([Ev(i) for i in range(10)])
    out = h.advance(2.0)
    h.feed([Ev(0)])
    clock.advance(0.5)
    out += h.finish()
    assert [
        (r.window_start, r.window_end, r.value) for r in out if isinstance(r, WindowResult)
    ] == [
        (0.0, 2.0, 5.0),
        (2.0, 2.5, 2.0),
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(1, 7), st.integers(1, 40))
def test_sample_keeps_one_in_n_across_batches(total: int, n: int, batch: int) -> None:
    h = OperatorHarness(sample(n))
    events = [Ev(i) for i in range(total)]
    out = [e for b in range(0, total, batch) for e in h.feed(events[b : b + batch])]
    assert out == events[::n]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdefg"), max_size=100), st.integers(1, 10))
def test_distinct_passes_first_of_each_key_within_its_memory(comms: list[str], keys: int) -> None:
    h = OperatorHarness(distinct("comm", max_keys=keys))
    out = h.feed([Ev(i, c) for i, c in enumerate(comms)])
    # reference: remember the `keys` most recently first-seen keys
    remembered: list[str] = []
    expected = []
    for i, c in enumerate(comms):
        if c not in remembered:
            expected.append(i)
            remembered.append(c)
            remembered = remembered[-keys:]
    assert [e.n for e in out] == expected


def test_distinct_forgets_after_a_while_and_passes_side_records() -> None:
    clock = ManualClock()
    h = OperatorHarness(distinct("comm", forget_after=10.0), clock)
    side = JoinIncomplete(key={"k": 1}, start=Ev(9), reason="timeout", waited=1.0)
    assert h.feed([Ev(1, "a"), side, Ev(2, "a"), Ev(3, "b")]) == [side, Ev(1, "a"), Ev(3, "b")]
    clock.advance(9.0)
    assert h.feed([Ev(4, "a")]) == []
    clock.advance(1.0)
    assert h.feed([Ev(5, "a"), Ev(6, "b")]) == [Ev(5, "a"), Ev(6, "b")]


def test_throttle_passes_the_first_per_interval_and_counts_the_rest() -> None:
    clock = ManualClock()
    h = OperatorHarness(throttle(3, per=1.0), clock)
    assert [e.n for e in h.feed([Ev(i) for i in range(2)])] == [0, 1]
    assert [e.n for e in h.feed([Ev(i) for i in range(2, 6)])] == [2]
    clock.advance(1.0)
    assert [e.n for e in h.feed([Ev(i) for i in range(6, 8)])] == [6, 7]
    assert h.stats.dropped == {"throttled": 3}


def test_throttle_intervals_count_from_the_open() -> None:
    clock = ManualClock(100.7)
    h = OperatorHarness(throttle(2, per=1.0), clock)
    assert [e.n for e in h.feed([Ev(1), Ev(2), Ev(3)])] == [1, 2]
    clock.advance(0.6)  # 101.3: still the first interval, [100.7, 101.7)
    assert h.feed([Ev(4)]) == []
    clock.advance(0.4)
    assert [e.n for e in h.feed([Ev(5), Ev(6), Ev(7)])] == [5, 6]
    assert h.stats.dropped == {"throttled": 3}


def test_bad_arguments() -> None:
    with pytest.raises(PipelineDefinitionError, match="sample: n must be a positive integer"):
        sample(0)
    with pytest.raises(PipelineDefinitionError, match="throttle: per must be a positive number"):
        throttle(1, per=0)
    with pytest.raises(PipelineDefinitionError, match="Tumbling: length must be a positive number"):
        rate(every=Tumbling(-1.0))


def test_sample_and_throttle_pass_side_records_without_counting_them() -> None:
    side = JoinIncomplete(key={"k": 1}, start=Ev(9), reason="timeout", waited=1.0)
    h = OperatorHarness(sample(2))
    assert h.feed([side, Ev(0), side, Ev(1), Ev(2)]) == [side, side, Ev(0), Ev(2)]
    assert h.feed([side]) == [side]
    assert h.feed([Ev(3), Ev(4)]) == [Ev(4)]
    h = OperatorHarness(throttle(2, per=1.0))
    assert h.feed([side, Ev(0), side, Ev(1), Ev(2), side]) == [side, side, side, Ev(0), Ev(1)]
    assert h.stats.dropped == {"throttled": 1}


def test_throttle_intervals_are_whole_nanoseconds() -> None:
    """Ten steps of 0.1 s are ten intervals: one event passes in each."""
    clock = ManualClock()
    h = OperatorHarness(throttle(1, per=0.1), clock)
    passed = []
    for i in range(10):
        passed += h.feed([Ev(i), Ev(100 + i)])
        clock.advance(0.1)
    assert [e.n for e in passed] == list(range(10))
    assert h.stats.dropped == {"throttled": 10}


def rates(records: list[Record]) -> list[tuple[float | None, float | None, float | None]]:
    assert all(isinstance(r, WindowResult) for r in records)
    return [(r.window_start, r.window_end, r.value) for r in records if isinstance(r, WindowResult)]


def test_rate_never_divides_by_time_that_has_not_passed() -> None:
    """A sliding rate ending after 0.5 s reports its one open window once,
    over the half second that passed; a window of zero length has no rate."""
    clock = ManualClock()
    h = OperatorHarness(rate(every=Sliding(3.0, 1.0)), clock)
    h.feed([Ev(1), Ev(2)])
    clock.advance(0.5)
    assert rates(h.finish()) == [(0.0, 0.5, 4.0)]
    h = OperatorHarness(rate(every=Sliding(2.0, 1.0)), clock := ManualClock())
    h.feed([Ev(1), Ev(2)])
    out = h.advance(1.0)
    h.feed([Ev(3)])
    out += h.advance(1.5)
    out += h.finish()
    assert rates(out) == [
        (0.0, 1.0, 2.0),
        (0.0, 2.0, 1.5),
        (1.0, 2.5, 1 / 1.5),
    ]
    h = OperatorHarness(rate(), clock := ManualClock())
    h.feed([Ev(1)])
    out = h.advance(1.0) + h.finish()
    assert rates(out) == [
        (0.0, 1.0, 1.0),
        (1.0, 1.0, None),
    ]
