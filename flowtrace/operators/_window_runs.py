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

from ..clock import with_wall_bounds
from ..context import StageContext
from ..records import EmptyWindows, LateEvent, Record
from ._intervals import Intervals, nanoseconds

__all__ = [
    "MAX_EMPTY_RUN",
    "Emitter",
    "EventTimeRun",
    "ProcessingTimeRun",
    "WholeStreamRun",
    "WindowRun",
]

MAX_EMPTY_RUN = 10
"""Processing time: the most empty windows one call emits one by one. When
more are due at once (the clock jumped: a replayed recording with a gap, a
machine that slept), they are one :class:`~flowtrace.records.EmptyWindows`
record instead (see :class:`~flowtrace.operators.Window`), so the work and
output of a call are bounded whatever time passed. A live run ticks once
per window, so it prints every window as it ends unless the process stalls
for more than 10 windows (a stopped process, a very short step): then the
windows of the stall that held no event are one record too."""


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
        self.summarised_windows = 0

    def emit(self, q: int, start: float, end: float, *, empty: bool) -> list[Record]:
        """Window ``q``'s records (``empty``: also when it holds nothing);
        forgets the intervals no later window covers; see :meth:`_count`."""
        out = self.state.records(q, start, end, empty=empty)
        self.state.release_through(q)
        self._count(q, 1)
        return out

    def emit_empty(self, last: int, count: int, start: float, end: float, step: float) -> Record:
        """The ``count`` empty windows through window ``last`` (from
        ``start`` to ``end``) as one record, counted as that many windows."""
        record = EmptyWindows(windows=count, step=step, window_start=start, window_end=end)
        self.summarised_windows += count
        self._count(last, count)
        return with_wall_bounds([record], self.ctx.clock, start, end)[0]

    def _count(self, last: int, windows: int) -> None:
        """Counts ``windows`` more emitted, through window ``last``; after the
        ``limit``-th, counts the events of later intervals (``after_limit``),
        forgets them and asks the pipeline to stop."""
        self.emitted += windows
        if self.limit is not None and self.emitted >= self.limit:
            self.stopped = True
            self.ctx.stats.drop("after_limit", self.state.events_after(last))
            self.state.clear()
            self.stop()


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
        """Emit every window up to ``last``, empty ones too; when more than
        :data:`MAX_EMPTY_RUN` empty ones are due (up to ``limit``), those
        are one :class:`~flowtrace.records.EmptyWindows` record.

        Every interval holding events is at most ``self.next`` (events fold
        into the current interval right after the windows before it are
        emitted), so the windows from ``self.next`` through the last one
        covering such an interval (at most ``panes``) hold events, and the
        ones after it are empty."""
        out: list[Record] = []
        windows = self.windows
        newest = max(self.state.accs, default=None)
        first_empty = self.next if newest is None else max(self.next, newest + self.panes)
        while self.next <= min(last, first_empty - 1) and not windows.stopped:
            out += self._emit_one()
        due = last - self.next + 1
        if windows.limit is not None:
            due = min(due, windows.limit - windows.emitted)
        if due > MAX_EMPTY_RUN and not windows.stopped:
            end_of_run = self.next + due - 1
            start, _ = self._bounds(self.next)
            _, end = self._bounds(end_of_run)
            out.append(windows.emit_empty(end_of_run, due, start, end, self.step_ns / 1e9))
            self.next = end_of_run + 1
        while self.next <= last and not windows.stopped:
            out += self._emit_one()
        return out

    def _emit_one(self) -> list[Record]:
        q = self.next
        self.next += 1
        return self.windows.emit(q, *self._bounds(q), empty=True)


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
