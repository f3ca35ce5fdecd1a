"""The runtime logic of one run of a window operator.

A window operator's clock (:mod:`~flowtrace.operators.windowing`) builds one
of these each time the operator opens: :class:`WholeStreamRun`,
:class:`ProcessingTimeRun` or :class:`EventTimeRun`, over a fresh
:class:`Emitter` holding the run's intervals, how many windows were
emitted and whether ``limit`` stopped the run. Nothing here outlives a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..context import StageContext
from ..records import LateEvent, Record
from ._intervals import Intervals, nanoseconds

__all__ = [
    "MAX_EMPTY_RUN",
    "Emitter",
    "EventTimeRun",
    "ProcessingTimeRun",
    "WholeStreamRun",
    "WindowRun",
]

MAX_EMPTY_RUN = 4096
"""Processing time: the longest run of empty windows one call emits. When
more empty windows than this are due at once (the clock jumped: a machine
resumed, a replayed recording with a gap), the whole run is skipped instead
of building every one of them (see :class:`~flowtrace.operators.Window`)."""


class Emitter:
    """One run's intervals and what it emitted: builds a window's records,
    counts the windows, and stops the run after ``limit`` of them."""

    def __init__(
        self,
        state: Intervals[Any],
        ctx: StageContext,
        limit: int | None,
        stop: Callable[[], None],
    ) -> None:
        self.state = state
        self.ctx = ctx
        self.limit = limit
        self.stop = stop
        self.emitted = 0
        self.stopped = False
        self.skipped_windows = 0

    def emit(self, q: int, start: float, end: float, *, empty: bool) -> list[Record]:
        """Window ``q``'s records (``empty``: also when it holds nothing);
        forgets the intervals no later window covers; after the ``limit``-th
        window, counts the events of later intervals (``after_limit``),
        forgets them and asks the pipeline to stop."""
        out = self.state.records(q, start, end, empty=empty)
        self.state.release_through(q)
        self.emitted += 1
        if self.limit is not None and self.emitted >= self.limit:
            self.stopped = True
            self.ctx.stats.drop("after_limit", self.state.events_after(q))
            self.state.clear()
            self.stop()
        return out


class WindowRun(ABC):
    """When a run's windows are complete, and what each batch, tick and the
    end of stream emit. Never called once ``windows.stopped``."""

    def __init__(self, windows: Emitter) -> None:
        self.windows = windows
        self.state = windows.state
        self.ctx = windows.ctx
        self.origin = self.ctx.clock.now()
        self.origin_ns = nanoseconds(self.origin)

    @abstractmethod
    def process(self, batch: list[Any]) -> list[Record]: ...

    def tick(self) -> list[Record]:
        return []

    @abstractmethod
    def finish(self) -> list[Record]: ...


class WholeStreamRun(WindowRun):
    """One window from the open to end of stream, emitted then."""

    def process(self, batch: list[Any]) -> list[Record]:
        self.state.fold(0, batch)
        return []

    def finish(self) -> list[Record]:
        return self.state.records(0, self.origin, self.ctx.clock.now(), empty=True)


class ProcessingTimeRun(WindowRun):
    """Intervals of ``every.step`` from the open; see
    :class:`~flowtrace.operators.Window` for the rules."""

    def __init__(self, panes: int, step: float, windows: Emitter) -> None:
        super().__init__(windows)
        self.panes = panes
        self.step_ns = max(1, nanoseconds(step))
        self.next = 0  # the oldest window not yet emitted

    def process(self, batch: list[Any]) -> list[Record]:
        current = self._interval_of(self.ctx.clock.now())
        out = self._emit_through(current - 1)
        if self.windows.stopped:
            self.ctx.stats.drop("after_limit", len(batch))
        else:
            self.state.fold(current, batch)
        return out

    def tick(self) -> list[Record]:
        return self._emit_through(self._interval_of(self.ctx.clock.now()) - 1)

    def finish(self) -> list[Record]:
        now = self.ctx.clock.now()
        current = self._interval_of(now)
        out = self._emit_through(current - 1)
        if self.windows.stopped or self._repeats_last(current, now):
            return out
        start, _ = self._bounds(current)
        return out + self.windows.emit(current, start, now, empty=True)

    def _interval_of(self, now: float) -> int:
        """The interval ``now`` falls in (whole nanoseconds)."""
        return (nanoseconds(now) - self.origin_ns) // self.step_ns

    def _bounds(self, q: int) -> tuple[float, float]:
        """Window ``q``'s start (not before the open) and end."""
        first = q - self.panes + 1
        start = self.origin if first <= 0 else (self.origin_ns + first * self.step_ns) / 1e9
        return start, (self.origin_ns + (q + 1) * self.step_ns) / 1e9

    def _repeats_last(self, current: int, now: float) -> bool:
        """End of stream: whether window ``current`` cut at ``now`` would
        repeat window ``current - 1``: both begin at the open (a sliding
        window's first ones), no time has passed in interval ``current``
        and no event arrived in it."""
        return (
            0 < current < self.panes
            and nanoseconds(now) == self.origin_ns + current * self.step_ns
            and not self.state.events.get(current)
        )

    def _emit_through(self, last: int) -> list[Record]:
        """Emit every window up to ``last``, empty ones too, except a run of
        more than :data:`MAX_EMPTY_RUN` empty windows at the end (see
        :meth:`_empty_run`), which is skipped and reported."""
        out: list[Record] = []
        windows = self.windows
        skip_from = self._empty_run(last)
        while self.next <= min(last, skip_from - 1) and not windows.stopped:
            q = self.next
            self.next += 1
            out += windows.emit(q, *self._bounds(q), empty=True)
        if self.next <= last and not windows.stopped:  # the run of empty windows
            skipped = last - self.next + 1
            windows.skipped_windows += skipped
            self.next = last + 1
            jumped = skipped * self.step_ns / 1e9
            self.ctx.report(
                f"skipped {skipped} empty windows: the clock jumped {jumped:.9g} s"
                f" (more than {MAX_EMPTY_RUN} due at once)"
            )
        return out

    def _empty_run(self, last: int) -> int:
        """The first window of a run of empty windows through ``last`` to
        skip, or ``last + 1`` to emit every window due.

        Every interval holding events is at most ``self.next`` (events fold
        into the current interval right after the windows before it are
        emitted), so the windows from ``self.next`` through the last one
        covering such an interval hold events (at most ``panes``) and those
        after it are empty. That empty run is skipped when it is longer than
        :data:`MAX_EMPTY_RUN` and ``limit`` would not stop the run within
        :data:`MAX_EMPTY_RUN` windows of it anyway."""
        if last - self.next + 1 <= MAX_EMPTY_RUN:
            return last + 1
        newest = max(self.state.accs, default=None)
        first_empty = self.next
        if newest is not None:
            first_empty = max(first_empty, newest + self.panes)
        if last - first_empty + 1 <= MAX_EMPTY_RUN:
            return last + 1
        limit = self.windows.limit
        if limit is not None:
            left = limit - self.windows.emitted - (first_empty - self.next)
            if left <= MAX_EMPTY_RUN:
                return last + 1
        return first_empty


class EventTimeRun(WindowRun):
    """Intervals of ``every.step`` aligned to 0 on the events' own
    timestamps, closed by the watermark; see
    :class:`~flowtrace.operators.Window` for the rules."""

    def __init__(
        self,
        panes: int,
        step: float,
        stamp: Callable[[Any], int],
        lateness: float,
        emit_late: bool,
        windows: Emitter,
    ) -> None:
        super().__init__(windows)
        self.panes = panes
        self.step_ns = max(1, nanoseconds(step))
        self.stamp = stamp
        self.lateness_ns = nanoseconds(lateness)
        self.emit_late = emit_late
        self.closed: int | None = None  # the newest window settled
        self.max_ts: int | None = None

    def process(self, batch: list[Any]) -> list[Record]:
        if not batch:
            return []
        stamps = list(map(self.stamp, batch))
        step = self.step_ns
        newest = max(stamps)
        out: list[Record] = []
        if min(stamps) // step == newest // step:
            self._fold_or_late(newest // step, batch, out)
        else:
            groups: dict[int, list[Any]] = {}
            for event, ts in zip(batch, stamps, strict=True):
                group = groups.get(ts // step)
                if group is None:
                    groups[ts // step] = [event]
                else:
                    group.append(event)
            for interval, events in groups.items():
                self._fold_or_late(interval, events, out)
        if self.max_ts is None or newest > self.max_ts:
            self.max_ts = newest
        watermark = self.max_ts - self.lateness_ns
        return out + self._emit_through(watermark // step - 1)

    def finish(self) -> list[Record]:
        if not self.state.accs:
            return []
        return self._emit_through(max(self.state.accs) + self.panes - 1)

    def _bounds(self, q: int) -> tuple[float, float]:
        return (q - self.panes + 1) * self.step_ns / 1e9, (q + 1) * self.step_ns / 1e9

    def _fold_or_late(self, interval: int, events: list[Any], out: list[Record]) -> None:
        last_window = interval + self.panes - 1
        if self.closed is None or last_window > self.closed:
            self.state.fold(interval, events)
            return
        self.ctx.stats.drop("late", len(events))
        if self.emit_late:
            assert self.max_ts is not None
            start, end = self._bounds(last_window)
            watermark = (self.max_ts - self.lateness_ns) / 1e9
            out += [
                LateEvent(event=e, watermark=watermark, window_start=start, window_end=end)
                for e in events
            ]

    def _emit_through(self, last: int) -> list[Record]:
        """Settle the windows up to ``last``, emitting those with events."""
        if self.closed is not None and last <= self.closed:
            return []
        first = self.closed + 1 if self.closed is not None else min(self.state.accs, default=0)
        out: list[Record] = []
        for q in self.state.windows_with_events(first, last):
            if self.windows.stopped:
                break
            out += self.windows.emit(q, *self._bounds(q), empty=False)
        self.closed = last
        return out
