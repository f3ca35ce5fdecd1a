"""Windows: tumbling, sliding and whole-stream, in processing or event time.

What a window covers and when it is emitted is configuration shared by
every windowed operator (``every=`` and ``clock=``, see
:mod:`~flowtrace.operators.windowing`). Each interval keeps one
accumulator per key (see :mod:`~flowtrace.operators.aggregates`), never the
events themselves (except for :class:`~flowtrace.operators.Collect`); a
sliding window merges its intervals' accumulators when it is emitted, so
every event is folded once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..kernel_forms import AggregateForm, KernelForm, UserOnly
from ..records import Record
from ..stages import Operator
from ._fields import KeyGetter, KeySpec, missing_field, positive_int
from ._intervals import Intervals
from ._window_runs import MAX_EMPTY_RUN, Emitter, WindowRun
from .aggregates import Aggregate
from .windowing import EventTime, ProcessingTime, WindowClock, Windower, check_windowing

__all__ = ["DEFAULT_MAX_KEYS", "MAX_EMPTY_RUN", "Window", "window"]

T = TypeVar("T")

DEFAULT_MAX_KEYS = 10_240
"""Distinct keys an interval holds by default (bcc's default map size)."""


class Window(Operator[T, Record], Generic[T]):
    """Applies ``aggregate`` to the events of each window; emits one record per
    window (per key with ``by``), oldest window first, keys in order of first
    appearance.

    ``every`` says how time is cut (:class:`~flowtrace.operators.Tumbling`,
    :class:`~flowtrace.operators.Sliding`; None: the whole stream) and
    ``clock`` which time an event has
    (:class:`~flowtrace.operators.ProcessingTime`, the default, or
    :class:`~flowtrace.operators.EventTime`); both are immutable
    configuration, and each run builds fresh logic from them in ``open``.

    *Whole stream* (``every=None``): one window from when the
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

    *Event time* (``clock=EventTime(field, lateness, emit_late)``): an
    event belongs to the interval of its timestamp ``field`` (nanoseconds,
    ``bpf_ktime_get_ns()``), intervals aligned to 0. The watermark is the
    largest timestamp seen minus ``lateness`` seconds and advances per
    batch; a window is emitted once the watermark reaches its end, and only
    if it holds events. An event whose windows were all emitted already is
    *late*: counted as dropped (``late``) and, with ``emit_late``, emitted
    as a :class:`~flowtrace.records.LateEvent` so nothing disappears
    unseen. Without new events the watermark does not move; end of stream
    emits everything.

    Bounds: at most ``max_keys`` distinct keys per interval; events of
    further keys are counted as dropped (``key_limit``) and left out. A
    sliding window merges ``length / step`` intervals. Processing time holds
    at most ``length / step + 1`` intervals; event time those within
    ``length + lateness`` of the watermark.

    Clock jumps, processing time: a ``process``, ``tick`` or ``finish``
    call emits the windows due one by one, except that when more than
    :data:`MAX_EMPTY_RUN` (10) empty windows are due at once, that run is
    one :class:`~flowtrace.records.EmptyWindows` record (how many, from
    when to when), a side record every sink prints or writes. So one call
    builds at most ``length / step`` windows holding events, 10 empty ones
    and one such record, however far the clock moved (a replayed recording
    with a gap, a machine that slept), and a replay's output is bounded by
    its events, not by the time it spans. A live run ticks once per window,
    so it emits each window as it ends, unless it stalls for more than 10
    windows: the empty ones of the stall are then one record. The record counts
    towards ``limit`` as the windows it stands for (and stops short at the
    limit), and :attr:`summarised_windows` adds them up. No event is ever
    left out.

    ``limit``: emit at most that many windows, then ask the pipeline to stop
    (vfsreadlat's ``count``); events that fall in no emitted window are then
    counted as dropped (``after_limit``).

    Side records from upstream (:class:`~flowtrace.records.SideRecord`: late
    events, incomplete joins) go on unchanged, ahead of the results emitted
    for their batch; the aggregate never sees them.

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
    arguments raise :class:`~flowtrace.errors.PipelineDefinitionError` (one
    line); a missing field fails the stage with a one-line message naming the field.
    """

    def __init__(
        self,
        aggregate: Aggregate[T, Any],
        *,
        every: Windower | None = None,
        clock: WindowClock = ProcessingTime(),
        by: KeySpec | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        limit: int | None = None,
        name: str = "",
    ) -> None:
        self.name = name or f"window({aggregate.name})"
        what = self.name
        check_windowing(what, every, clock, limit)
        if limit is not None:
            positive_int(limit, f"{what}: limit")
        positive_int(max_keys, f"{what}: max_keys")
        if by is not None and not aggregate.keyed:
            raise PipelineDefinitionError(
                f"{what}: {aggregate.name} is keyed already; drop by= or use another aggregate"
            )
        self.aggregate = aggregate
        self.every = every
        self.clock = clock
        self.key = KeyGetter.of(by, what) if by is not None else None
        self.max_keys = max_keys
        self.limit = limit
        self.tick_interval = clock.tick_interval(every)

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        aggregate = copy.copy(self.aggregate)  # its ctx belongs to this run
        aggregate.open(ctx)
        panes = self.every.panes if self.every is not None else 1
        state = Intervals(aggregate, self.key, panes, self.max_keys, ctx)
        self._windows = Emitter(state, ctx, self.limit, self.request_pipeline_stop)
        self._run: WindowRun = self.clock.start(self.every, self._windows)

    @property
    def summarised_windows(self) -> int:
        """Empty windows this run sent as
        :class:`~flowtrace.records.EmptyWindows` records rather than one by
        one (0 before ``open``)."""
        windows: Emitter | None = getattr(self, "_windows", None)
        return windows.summarised_windows if windows is not None else 0

    def process(self, batch: list[T]) -> Sequence[Record]:
        if self._windows.stopped:
            self.ctx.stats.drop("after_limit", len(batch))
            return []
        try:
            return self._run.process(batch)
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc

    def tick(self) -> Sequence[Record]:
        return [] if self._windows.stopped else self._run.tick()

    def finish(self) -> Sequence[Record]:
        return [] if self._windows.stopped else self._run.finish()

    def reads_fields(self) -> tuple[str, ...]:
        """The event fields the aggregate, ``by`` and an event-time clock read."""
        fields = [*self.aggregate.reads_fields(), *(self.key.fields if self.key else ())]
        if isinstance(self.clock, EventTime):
            fields.append(self.clock.field)
        return tuple(dict.fromkeys(fields))

    def output_type(self, input_type: type | None) -> type | None:
        """The aggregate's record type (None when it does not say)."""
        return self.aggregate.record_type

    def kernel_form(self) -> KernelForm | UserOnly:
        """The aggregate kept in kernel maps: whole-stream or tumbling
        processing-time windows, keyed by fields; records built here, by
        the aggregate's own ``result``."""
        if isinstance(self.clock, EventTime):
            return UserOnly(
                f"an event-time window (EventTime({self.clock.field!r})) closes by the events'"
                " own timestamps; the kernel keeps processing-time windows"
            )
        if self.every is not None and self.every.panes != 1:
            return UserOnly("a sliding window; the kernel keeps tumbling windows")
        kind = self.aggregate.kernel_aggregate()
        if isinstance(kind, UserOnly):
            return kind
        key = self.key
        if key is not None and not key.fields:
            return UserOnly("keyed by a Python function (by=)")
        aggregate = self.aggregate

        def records(accs: Any, start: float, end: float) -> list[Record]:
            if key is None:
                return [aggregate.result(accs, start, end, None)]
            return [aggregate.result(acc, start, end, key.as_dict(k)) for k, acc in accs.items()]

        return AggregateForm(
            kind.aggregate,
            kind.value,
            key.fields if key is not None else kind.key,
            kind.max_keys or self.max_keys,
            records,
            divisor=kind.divisor,
            max_index=kind.max_index,
            every=self.every.step if self.every is not None else None,
            limit=self.limit,
        )


def window(
    aggregate: Aggregate[T, Any],
    *,
    every: Windower | None = None,
    clock: WindowClock = ProcessingTime(),
    by: KeySpec | None = None,
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    name: str = "",
) -> Window[T]:
    """Aggregate events per window.

    ``window(Count(), every=Tumbling(1.0))``: events per second.
    ``window(Sum("bytes"), every=Sliding(10.0, 1.0))``: the last ten
    seconds, every second. ``window(Max("lat"))``: the whole stream, at its
    end. ``clock=EventTime("ts", lateness=0.5)`` for event time. See
    :class:`Window` for time, lateness, bounds and end-of-stream rules.
    """
    return Window(
        aggregate, every=every, clock=clock, by=by, max_keys=max_keys, limit=limit, name=name
    )
