"""The reorder buffer without a kernel: order within the window, late
events passed on and counted, the hold limit, the wake-up time."""

from __future__ import annotations

import random

import msgspec
import pytest

from flowtrace.reorder import Reorder

MS = 1_000_000


class E(msgspec.Struct, frozen=True):
    ts: int
    cpu: int = 0


def ts(events: list[E]) -> list[int]:
    return [e.ts for e in events]


def test_events_come_out_in_order_once_the_window_passed() -> None:
    r = Reorder("ts", window=0.01)
    assert r.push([E(5 * MS, 1), E(1 * MS, 0)], now_ns=12 * MS) == [E(1 * MS, 0)]
    assert r.held == 1
    assert r.wait(now_ns=12 * MS) == pytest.approx(0.003)
    assert ts(r.push([E(3 * MS, 1), E(9 * MS)], now_ns=16 * MS)) == [3 * MS, 5 * MS]
    assert ts(r.flush()) == [9 * MS]
    assert r.late == 0 and r.wait(now_ns=0) is None


def test_an_event_later_than_the_window_is_passed_on_and_counted() -> None:
    r = Reorder("ts", window=0.01)
    assert ts(r.push([E(20 * MS)], now_ns=40 * MS)) == [20 * MS]
    late = r.push([E(15 * MS), E(20 * MS), E(35 * MS)], now_ns=41 * MS)
    assert ts(late) == [15 * MS, 20 * MS]  # 20 ms again is not late: equal is in order
    assert r.late == 1
    assert ts(r.flush()) == [35 * MS]


def test_settled_events_go_at_once_and_in_order() -> None:
    """With no probe in flight at 10 ms (settled), events before it are due
    whatever the window; one at exactly 10 ms may still have company."""
    r = Reorder("ts", window=60.0)
    assert r.push([E(4 * MS), E(2 * MS)], now_ns=5 * MS) == []
    out = r.push([E(10 * MS), E(3 * MS)], now_ns=10 * MS, settled_ns=10 * MS)
    assert ts(out) == [2 * MS, 3 * MS, 4 * MS]
    assert r.held == 1 and r.late == 0
    assert ts(r.push([E(12 * MS)], now_ns=13 * MS, settled_ns=13 * MS)) == [10 * MS, 12 * MS]


def test_equal_timestamps_keep_their_arrival_order() -> None:
    r = Reorder("ts", window=0.0)
    out = r.push([E(5, 0), E(3, 1), E(5, 2), E(3, 3)], now_ns=100)
    assert [e.cpu for e in out] == [1, 3, 0, 2]


def test_the_oldest_are_released_early_past_the_limit() -> None:
    r = Reorder("ts", window=1.0, limit=3)
    out = r.push([E(i) for i in (5, 1, 4, 2, 3)], now_ns=0)
    assert ts(out) == [1, 2]
    assert r.held == 3
    assert ts(r.flush()) == [3, 4, 5]


def test_shuffled_per_cpu_streams_come_out_sorted_with_nothing_lost() -> None:
    rng = random.Random(7)
    events = [E(t * 1000, cpu=t % 4) for t in range(20_000)]
    per_cpu = [[e for e in events if e.cpu == c] for c in range(4)]
    r = Reorder("ts", window=0.001)
    out: list[E] = []
    now = 0
    while any(per_cpu):
        now += 100_000  # 0.1 ms per read; each CPU's ring read in turn, a random amount
        batch: list[E] = []
        for ring in per_cpu:
            take = [e for e in ring if e.ts <= now][: rng.randint(0, 200)]
            del ring[: len(take)]
            batch += take
        out += r.push(batch, now_ns=now)
    out += r.flush()
    assert out == sorted(events, key=lambda e: e.ts)
    assert r.late == 0


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="window"):
        Reorder("ts", window=-1)
    with pytest.raises(ValueError, match="limit"):
        Reorder("ts", limit=0)
