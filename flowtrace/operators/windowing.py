"""When a window operator emits: a *windower* and a *clock*.

Every windowed operator (``window``, ``count``, ``log2_histogram``,
``linear_histogram``, ``rate``) takes the same two configuration objects:

* ``every=``: how time is cut into windows. :class:`Tumbling` (back-to-back
  windows), :class:`Sliding` (overlapping windows, one every ``step``), or
  ``None``: the whole stream, one window emitted at its end.
* ``clock=``: which time an event has and when a window is complete.
  :class:`ProcessingTime` (default: when its batch arrived; windows close
  as the pipeline clock passes their end) or :class:`EventTime` (its own
  timestamp field; windows close as the watermark passes their end).

Both are immutable descriptions, checked when built. Each time a window
operator opens, its clock builds fresh runtime logic for that run
(:mod:`~flowtrace.operators._window_runs`), so one configured operator runs
any number of times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PipelineDefinitionError
from ._fields import ValueGetter, positive
from ._window_runs import Emitter, EventTimeRun, ProcessingTimeRun, WholeStreamRun, WindowRun

__all__ = [
    "EventTime",
    "ProcessingTime",
    "Sliding",
    "Tumbling",
    "WindowClock",
    "Windower",
    "check_windowing",
]


@dataclass(frozen=True)
class Tumbling:
    """Back-to-back windows ``length`` seconds long: ``every=Tumbling(1.0)``
    emits one result per second, each covering that second."""

    length: float

    def __post_init__(self) -> None:
        positive(self.length, "Tumbling: length", allow_none=False)

    @property
    def step(self) -> float:
        """Seconds from one window's end to the next one's."""
        return self.length

    @property
    def panes(self) -> int:
        """Intervals of ``step`` seconds a window covers."""
        return 1


@dataclass(frozen=True)
class Sliding:
    """Windows ``length`` seconds long, one ending every ``step`` seconds:
    ``every=Sliding(10.0, 1.0)`` emits, each second, the last ten seconds.
    ``length`` must be a whole number of steps; each event is folded once
    into its interval and a window merges its intervals when emitted."""

    length: float
    step: float

    def __post_init__(self) -> None:
        positive(self.length, "Sliding: length", allow_none=False)
        positive(self.step, "Sliding: step", allow_none=False)
        n = round(self.length / self.step)
        if n < 1 or abs(n * self.step - self.length) > 1e-9 * self.length:
            raise PipelineDefinitionError(
                f"Sliding({self.length}, {self.step}): length {self.length} s is not a whole"
                f" multiple of the step {self.step} s; choose a length that is"
            )

    @property
    def panes(self) -> int:
        """Intervals of ``step`` seconds a window covers."""
        return round(self.length / self.step)


Windower = Tumbling | Sliding
"""How time is cut into windows: intervals of ``step`` seconds (counted in
whole nanoseconds), a window covering ``panes`` consecutive intervals."""

@dataclass(frozen=True)
class ProcessingTime:
    """An event belongs to the interval in which its batch arrived
    (``ctx.clock.now()``); intervals count from when the operator opens. A
    window is emitted when its end passes, by the batch or tick that
    notices it, also when empty (unkeyed: an empty result)."""

    def tick_interval(self, every: Windower | None) -> float | None:
        """How often the operator is ticked: every ``step`` (None: never)."""
        return every.step if every is not None else None

    def start(self, every: Windower | None, windows: Emitter) -> WindowRun:
        """Fresh logic for one run; intervals count from now."""
        if every is None:
            return WholeStreamRun(windows)
        return ProcessingTimeRun(every.panes, every.step, windows)


@dataclass(frozen=True)
class EventTime:
    """An event belongs to the interval of its own timestamp ``field``
    (nanoseconds, ``bpf_ktime_get_ns()``; intervals aligned to 0). The
    watermark is the largest timestamp seen minus ``lateness`` seconds; a
    window is emitted once the watermark passes its end, and only if it
    holds events. An event whose windows were all emitted is late: counted
    (``late``) and, with ``emit_late``, passed on as a
    :class:`~flowtrace.records.LateEvent`."""

    field: str
    lateness: float = 0.0
    emit_late: bool = True

    def __post_init__(self) -> None:
        ValueGetter.of(self.field, "EventTime")
        lateness = self.lateness
        if (
            isinstance(lateness, bool)
            or not isinstance(lateness, int | float)
            or not 0 <= lateness < math.inf
        ):
            raise PipelineDefinitionError(
                f"EventTime: lateness must be >= 0 and finite, got {lateness!r}"
            )

    @property
    def timestamp(self) -> Callable[[Any], int]:
        """Reads an event's timestamp."""
        return ValueGetter.of(self.field, "EventTime").get

    def tick_interval(self, every: Windower | None) -> float | None:
        """Never ticked: the watermark moves with events only."""
        return None

    def start(self, every: Windower | None, windows: Emitter) -> WindowRun:
        """Fresh logic for one run."""
        assert every is not None  # check_windowing
        return EventTimeRun(
            every.panes, every.step, self.timestamp, self.lateness, self.emit_late, windows
        )


WindowClock = ProcessingTime | EventTime
"""Which time an event has and when a window is complete."""


def check_windowing(what: str, every: object, clock: object, limit: object) -> None:
    """One-line errors for ``every=``/``clock=``/``limit=`` arguments that do
    not fit together."""
    if every is not None and not isinstance(every, Tumbling | Sliding):
        hint = f"Tumbling({every!r})" if isinstance(every, int | float) else "Tumbling(seconds)"
        raise PipelineDefinitionError(
            f"{what}: every={every!r} is not a windower; pass every={hint}"
            " or every=Sliding(length, step)"
        )
    if not isinstance(clock, ProcessingTime | EventTime):
        raise PipelineDefinitionError(
            f"{what}: clock={clock!r} is not a clock;"
            " pass clock=ProcessingTime() or clock=EventTime('<timestamp field>')"
        )
    if every is None and (isinstance(clock, EventTime) or limit is not None):
        raise PipelineDefinitionError(
            f"{what}: event time and limit need windows; pass every=Tumbling(seconds)"
        )
