"""Windows: tumbling, sliding and whole-stream, in processing or event time.

Time is cut into intervals of ``every`` seconds (the window's ``slide``;
tumbling: equal to its ``size``), counted in whole nanoseconds; a window
covers ``size / every`` consecutive intervals and is numbered by its last
one. Each interval keeps one accumulator per key (see
:mod:`~flowtrace.operators.aggregates`), never the events themselves (except
for :class:`~flowtrace.operators.Collect`); a sliding window merges its
intervals' accumulators when it is emitted, so every event is folded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..records import LateEvent, Record
from ..stages import Operator
from ._fields import KeyGetter, KeySpec, ValueGetter, missing_field, positive
from ._intervals import Intervals, nanoseconds
from .aggregates import Aggregate

__all__ = ["DEFAULT_MAX_KEYS", "MAX_EMPTY_RUN", "Window", "window"]

T = TypeVar("T")

DEFAULT_MAX_KEYS = 10_240
"""Distinct keys an interval holds by default (bcc's default map size)."""

MAX_EMPTY_RUN = 4096
"""Processing time: the longest run of empty windows one call emits. When
more empty windows than this are due at once (the clock jumped: a machine
resumed, a replayed recording with a gap), the whole run is skipped instead
of building every one of them (see :class:`Window`)."""


class Window(Operator[T, Record], Generic[T]):
    """Applies ``aggregate`` to the events of each window; emits one record per
    window (per key with ``by``), oldest window first, keys in order of first
    appearance.

    ``size`` is the window's length in seconds and ``every`` how often one
    is emitted: ``every`` alone gives tumbling windows of that length, both
    give sliding windows (``size`` must then be a whole number of
    ``every``), neither the whole stream.

    *Whole stream* (no ``size`` or ``every``): one window from when the
    operator opens to end of stream, emitted by ``finish`` (Ctrl-C prints
    bitehist's histogram).

    *Processing time* (default): an event belongs to the interval of
    ``ctx.clock.now()`` when its batch arrives. Windows start when the
    operator opens, which in a pipeline is when the source is ready (its
    probes attached), so the first window does not cover time in which
    nothing was traced; interval boundaries are computed in whole
    nanoseconds from that moment, so ten intervals of 0.1 s end exactly
    one second after it, where the runtime's ticks fall. A window is
    emitted by the first ``process`` or ``tick`` at or after its end, also
    when no events arrive and also when it is empty (for unkeyed
    aggregates: an empty histogram each interval). A sliding window that
    would begin before the open begins at the open.

    *Event time* (``time_field``): an event belongs to the interval of its
    timestamp (nanoseconds, ``bpf_ktime_get_ns()``), intervals aligned to 0.
    The watermark is the largest timestamp seen minus ``lateness`` seconds
    and advances per batch; a window is emitted once the watermark reaches
    its end, and only if it holds events. An event whose windows were all
    emitted already is *late*: counted as dropped (``late``) and, with
    ``emit_late``, emitted as a :class:`~flowtrace.records.LateEvent` so
    nothing disappears unseen. Without new events the watermark does not
    move; end of stream emits everything.

    Bounds: at most ``max_keys`` distinct keys per interval; events of
    further keys are counted as dropped (``key_limit``) and left out. A
    sliding window merges ``size / every`` intervals. Processing time holds
    at most ``size / every + 1`` intervals; event time those within
    ``size + lateness`` of the watermark.

    Clock jumps, processing time: one ``process``, ``tick`` or ``finish``
    call builds at most ``size / every`` windows holding events plus
    :data:`MAX_EMPTY_RUN` empty ones, however far the clock moved. The
    windows due after the last one holding events are all empty; when more
    than :data:`MAX_EMPTY_RUN` of them are due at once (and ``limit`` does
    not end the run before that), that whole run is skipped: not emitted,
    not counted towards ``limit``, added to :attr:`skipped_windows` and
    reported once (``skipped N empty windows: the clock jumped S s``).
    Shorter runs are emitted as usual. No event is ever skipped.

    ``limit``: emit at most that many windows, then ask the pipeline to stop
    (vfsreadlat's ``count``); events that fall in no emitted window are then
    counted as dropped (``after_limit``).

    Side records from upstream (:class:`~flowtrace.records.SideRecord`: late
    events, incomplete joins) pass through unchanged, ahead of the results
    emitted for their batch; the aggregate never sees them.

    End of stream, processing time: the windows whose end has passed are
    emitted as a tick would, then the one window still open that holds the
    newest interval, once, from its start to the moment of the end (its
    end cut to ``ctx.clock.now()``, including what arrived at that very
    moment); it is left out only when it would repeat the window just
    emitted (same start, no time passed and no event since). So no window
    is emitted twice, none claims time that has not passed (``rate``
    divides by the real length), and every event is in at least one
    window. Event time: every window holding events and not yet emitted,
    with its event-time bounds. Whole stream: the one window. Errors: bad
    arguments raise :class:`~flowtrace.errors.PipelineDefinitionError`; a
    missing field fails the stage with a one-line message naming the field.
    """

    def __init__(
        self,
        aggregate: Aggregate[T, Any],
        *,
        size: float | None = None,
        every: float | None = None,
        by: KeySpec | None = None,
        time_field: str | None = None,
        lateness: float = 0.0,
        max_keys: int = DEFAULT_MAX_KEYS,
        limit: int | None = None,
        emit_late: bool = True,
        name: str = "",
    ) -> None:
        self.name = name or f"window({aggregate.name})"
        what = self.name
        positive(every, f"{what}: every")
        positive(size, f"{what}: window size")
        positive(max_keys, f"{what}: max_keys")
        positive(limit, f"{what}: limit")
        if lateness < 0:
            raise PipelineDefinitionError(f"{what}: lateness must be >= 0, got {lateness!r}")
        if size is None:
            size = every  # every alone: tumbling windows that long
        slide = every if every is not None else size
        if size is None and (time_field is not None or limit is not None):
            raise PipelineDefinitionError(
                f"{what}: time_field and limit need a window size (size or every=...)"
            )
        self.panes_per_window = 1
        if size is not None and slide is not None:
            n = round(size / slide)
            if n < 1 or abs(n * slide - size) > 1e-9 * size:
                raise PipelineDefinitionError(
                    f"{what}: window size {size} s is not a whole multiple of the interval"
                    f" {slide} s; choose a size that is"
                )
            self.panes_per_window = n
        if by is not None and not aggregate.keyed:
            raise PipelineDefinitionError(
                f"{what}: {aggregate.name} is keyed already; drop by= or use another aggregate"
            )
        self.aggregate = aggregate
        self.size = size
        self.slide = slide
        self.key = KeyGetter.of(by, what) if by is not None else None
        self.time = ValueGetter.of(time_field, what) if time_field is not None else None
        self.lateness = lateness
        self.max_keys = max_keys
        self.limit = limit
        self.emit_late = emit_late
        self.tick_interval = slide if size is not None and time_field is None else None
        self.skipped_windows = 0
        """Empty windows skipped (since the last ``open``) because more than
        :data:`MAX_EMPTY_RUN` were due at once."""

    # -- lifecycle ------------------------------------------------------

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self.aggregate.open(ctx)
        self._origin = ctx.clock.now()
        self._origin_ns = nanoseconds(self._origin)
        self._state = Intervals(self.aggregate, self.key, self.panes_per_window, self.max_keys, ctx)
        self._next = 0  # processing time: the oldest window not yet emitted
        self._closed: int | None = None  # event time: the newest window settled
        self._max_ts: int | None = None
        self._emitted = 0
        self._stopped = False
        self.skipped_windows = 0
        self._slide_ns = max(1, nanoseconds(self.slide)) if self.slide is not None else 0
        self._lateness_ns = nanoseconds(self.lateness)

    def process(self, batch: list[T]) -> Sequence[Record]:
        if self._stopped:
            self.ctx.stats.drop("after_limit", len(batch))
            return []
        try:
            if self.time is not None:
                return self._process_event_time(batch)
            if self.slide is None:
                self._state.fold(0, batch)
                return []
            current = self._interval_of(self.ctx.clock.now())
            out = self._emit_through(current - 1)
            if self._stopped:
                self.ctx.stats.drop("after_limit", len(batch))
            else:
                self._state.fold(current, batch)
            return out
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc

    def tick(self) -> Sequence[Record]:
        if self._stopped:
            return []
        return self._emit_through(self._interval_of(self.ctx.clock.now()) - 1)

    def finish(self) -> Sequence[Record]:
        if self._stopped:
            return []
        now = self.ctx.clock.now()
        if self.slide is None:
            return self._state.records(0, self._origin, now, empty=True)
        if self.time is not None:
            if not self._state.accs:
                return []
            return self._emit_event_windows(max(self._state.accs) + self.panes_per_window - 1)
        current = self._interval_of(now)
        out = self._emit_through(current - 1)
        if self._stopped or self._repeats_last(current, now):
            return out
        start, _ = self._bounds(current)
        return out + self._emit(current, start, now)

    # -- time -----------------------------------------------------------

    def _interval_of(self, now: float) -> int:
        """Processing time: the interval ``now`` falls in (whole nanoseconds)."""
        return (nanoseconds(now) - self._origin_ns) // self._slide_ns

    def _bounds(self, q: int) -> tuple[float, float]:
        """Window ``q``'s start and end (processing time: not before open)."""
        first = q - self.panes_per_window + 1
        if self.time is not None:
            return first * self._slide_ns / 1e9, (q + 1) * self._slide_ns / 1e9
        start = self._origin if first <= 0 else (self._origin_ns + first * self._slide_ns) / 1e9
        return start, (self._origin_ns + (q + 1) * self._slide_ns) / 1e9

    def _repeats_last(self, current: int, now: float) -> bool:
        """Processing time, end of stream: whether window ``current`` cut at
        ``now`` would repeat window ``current - 1``: both begin at the open
        (a sliding window's first ones), no time has passed in interval
        ``current`` and no event arrived in it."""
        return (
            0 < current < self.panes_per_window
            and nanoseconds(now) == self._origin_ns + current * self._slide_ns
            and not self._state.events.get(current)
        )

    def _emit_through(self, last: int) -> list[Record]:
        """Processing time: emit every window up to ``last``, empty ones too,
        except a run of more than :data:`MAX_EMPTY_RUN` empty windows at the
        end (see :meth:`_empty_run`), which is skipped and reported."""
        out: list[Record] = []
        skip_from = self._empty_run(last)
        while self._next <= min(last, skip_from - 1) and not self._stopped:
            q = self._next
            self._next += 1
            out += self._emit(q, *self._bounds(q))
        if self._next <= last and not self._stopped:  # the run of empty windows
            skipped = last - self._next + 1
            self.skipped_windows += skipped
            self._next = last + 1
            jumped = skipped * self._slide_ns / 1e9
            self.ctx.report(
                f"skipped {skipped} empty windows: the clock jumped {jumped:.9g} s"
                f" (more than {MAX_EMPTY_RUN} due at once)"
            )
        return out

    def _empty_run(self, last: int) -> int:
        """The first window of a run of empty windows through ``last`` to
        skip, or ``last + 1`` to emit every window due.

        Every interval holding events is at most ``self._next`` (events fold
        into the current interval right after the windows before it are
        emitted), so the windows from ``self._next`` through the last one
        covering such an interval hold events (at most ``size / every``)
        and those after it are empty. That empty run is skipped when it is
        longer than :data:`MAX_EMPTY_RUN` and ``limit`` would not stop the
        operator within :data:`MAX_EMPTY_RUN` windows of it anyway."""
        if last - self._next + 1 <= MAX_EMPTY_RUN:
            return last + 1
        newest = max(self._state.accs, default=None)
        first_empty = self._next
        if newest is not None:
            first_empty = max(first_empty, newest + self.panes_per_window)
        if last - first_empty + 1 <= MAX_EMPTY_RUN:
            return last + 1
        if self.limit is not None:
            left = self.limit - self._emitted - (first_empty - self._next)
            if left <= MAX_EMPTY_RUN:
                return last + 1
        return first_empty

    def _process_event_time(self, batch: list[T]) -> list[Record]:
        if not batch:
            return []
        assert self.time is not None
        stamps = list(map(self.time.get, batch))
        slide = self._slide_ns
        newest = max(stamps)
        out: list[Record] = []
        if min(stamps) // slide == newest // slide:
            self._fold_or_late(newest // slide, batch, out)
        else:
            groups: dict[int, list[T]] = {}
            for event, ts in zip(batch, stamps, strict=True):
                group = groups.get(ts // slide)
                if group is None:
                    groups[ts // slide] = [event]
                else:
                    group.append(event)
            for interval, events in groups.items():
                self._fold_or_late(interval, events, out)
        if self._max_ts is None or newest > self._max_ts:
            self._max_ts = newest
        watermark = self._max_ts - self._lateness_ns
        return out + self._emit_event_windows(watermark // slide - 1)

    def _fold_or_late(self, interval: int, events: list[T], out: list[Record]) -> None:
        last_window = interval + self.panes_per_window - 1
        if self._closed is None or last_window > self._closed:
            self._state.fold(interval, events)
            return
        self.ctx.stats.drop("late", len(events))
        if self.emit_late:
            assert self._max_ts is not None
            start, end = self._bounds(last_window)
            watermark = (self._max_ts - self._lateness_ns) / 1e9
            out += [
                LateEvent(event=e, watermark=watermark, window_start=start, window_end=end)
                for e in events
            ]

    def _emit_event_windows(self, last: int) -> list[Record]:
        """Event time: settle the windows up to ``last``, emitting those with events."""
        if self._closed is not None and last <= self._closed:
            return []
        first = self._closed + 1 if self._closed is not None else min(self._state.accs, default=0)
        out: list[Record] = []
        for q in self._state.windows_with_events(first, last):
            if self._stopped:
                break
            out += self._emit(q, *self._bounds(q))
        self._closed = last
        return out

    def _emit(self, q: int, start: float, end: float) -> list[Record]:
        out = self._state.records(q, start, end, empty=self.time is None)
        self._state.release_through(q)
        self._emitted += 1
        if self.limit is not None and self._emitted >= self.limit:
            self._stopped = True
            self.ctx.stats.drop("after_limit", self._state.events_after(q))
            self._state.clear()
            self.request_pipeline_stop()
        return out


def window(
    aggregate: Aggregate[T, Any],
    size: float | None = None,
    *,
    every: float | None = None,
    by: KeySpec | None = None,
    time_field: str | None = None,
    lateness: float = 0.0,
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    emit_late: bool = True,
    name: str = "",
) -> Window[T]:
    """Aggregate events per window.

    ``window(Count(), 1.0)``: tumbling one-second windows.
    ``window(Sum("bytes"), 10.0, every=1.0)``: the last ten seconds, every
    second (sliding). ``window(Max("lat"))``: the whole stream, at its end.
    See :class:`Window` for time, lateness, bounds and end-of-stream rules.
    """
    return Window(
        aggregate,
        size=size,
        every=every,
        by=by,
        time_field=time_field,
        lateness=lateness,
        max_keys=max_keys,
        limit=limit,
        emit_late=emit_late,
        name=name,
    )
