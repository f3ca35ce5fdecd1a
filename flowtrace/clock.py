"""Time as stages see it: monotonic seconds, replaceable for tests."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

import msgspec

__all__ = [
    "Clock",
    "ManualClock",
    "MonotonicClock",
    "ReplayClock",
    "TickSchedule",
    "wall_datetime",
    "wall_time",
    "with_wall_bounds",
]

R = TypeVar("R", bound=Any)


class Clock(Protocol):
    """A source of monotonic time in seconds."""

    def now(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class MonotonicClock:
    """``time.monotonic()``: the clock of ``bpf_ktime_get_ns()`` in seconds."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self, t: float) -> float:
        """Unix seconds of clock time ``t``, by the wall clock's offset now."""
        return t + (time.time() - time.monotonic())


class ManualClock:
    """A clock that moves only when told to; for tests of time-based stages
    and replays. ``wall_start`` is the wall-clock time (Unix seconds) of
    ``start`` (a replay passes the recording's); without it the clock's
    times have no wall-clock time (:meth:`wall` is None), so results of a
    virtual run do not depend on when it ran."""

    def __init__(self, start: float = 0.0, *, wall_start: float | None = None) -> None:
        self._now = start
        self._start = start
        self._wall_start = wall_start

    def wall(self, t: float) -> float | None:
        """Unix seconds of clock time ``t`` (None without a ``wall_start``)."""
        return None if self._wall_start is None else self._wall_start + (t - self._start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds


def wall_time(clock: Clock, t: float) -> float | None:
    """Unix seconds of time ``t`` on ``clock``: the clock's own ``wall(t)``
    when it has one (None: it has no wall-clock time), otherwise taken as
    ``time.monotonic()``'s."""
    wall = getattr(clock, "wall", None)
    if callable(wall):
        value = wall(t)
        return None if value is None else float(value)
    return t + (time.time() - time.monotonic())


def wall_datetime(clock: Clock, seconds: float) -> datetime | None:
    """Time ``seconds`` of ``clock`` as a UTC wall-clock time (None without
    one, or outside what a datetime holds: years 1 to 9999)."""
    wall = wall_time(clock, seconds)
    if wall is None:
        return None
    try:
        return datetime.fromtimestamp(wall, timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


def with_wall_bounds(records: list[R], clock: Clock, start: float, end: float) -> list[R]:
    """``records`` (msgspec Structs with ``wall_start``/``wall_end``) with
    the window ``start``..``end`` of ``clock`` in wall-clock time, from one
    reading of it (so the bounds are ``end - start`` apart); unchanged when
    the clock has no wall-clock time."""
    if not records or (wall_start := wall_datetime(clock, start)) is None:
        return records
    wall = {"wall_start": wall_start, "wall_end": wall_start + timedelta(seconds=end - start)}
    return [msgspec.structs.replace(r, **wall) for r in records]


class ReplayClock(ManualClock):
    """A virtual clock of which every run gets its own copy, starting where
    this one stands (a replay's recorded timeline: two runs of one replay must
    not move each other's time). A plain :class:`ManualClock` is shared by
    the runs of its pipeline, so the code holding it drives their time."""

    def fresh(self) -> ReplayClock:
        return ReplayClock(self.now(), wall_start=self.wall(self.now()))


class TickSchedule:
    """When an operator's ``tick()`` is due, on a clock, in whole nanoseconds.

    Ticks fall on ``start + k * interval``; :meth:`due` answers once per
    reached tick time however far the clock jumped (a virtual clock may skip
    several intervals; the operator's tick then emits everything due).
    Integer arithmetic keeps 10 steps of 0.1 s exactly 10 ticks.
    """

    def __init__(self, clock: Clock, interval: float) -> None:
        if interval <= 0:
            raise ValueError("a tick interval must be positive")
        self._clock = clock
        self._interval = round(interval * 1e9)
        self._next = _ns(clock.now()) + self._interval

    def seconds_left(self) -> float:
        """Seconds until the next tick (0 when one is due)."""
        return max(0, self._next - _ns(self._clock.now())) / 1e9

    def due(self) -> bool:
        """Whether a tick is due now; if so, the schedule moves past ``now``."""
        now = _ns(self._clock.now())
        if now < self._next:
            return False
        self._next += self._interval * (1 + (now - self._next) // self._interval)
        return True


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)
