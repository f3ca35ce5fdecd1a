"""Test doubles shipped with flowtrace: a source of given events, a sink
that keeps what it receives, and a harness that drives one operator on a
virtual clock. Use them to test operators and sinks without a kernel, and in
your own tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .clock import ManualClock, TickSchedule
from .context import SourceContext, StageContext
from .routing import process_batch
from .stages import AsyncOperator, Emit, Operator, Sink, Source
from .stats import StageStats

__all__ = ["CollectSink", "ListSource", "OperatorHarness"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")


class ListSource(Source[T], Generic[T]):
    """Emits ``events`` in batches of ``batch_size``, then ends.

    With ``interval`` it sleeps that long between batches, so a stop request
    can arrive mid-stream; events not yet emitted when it stops are not sent.
    """

    def __init__(
        self, events: Iterable[T], *, batch_size: int = 100, interval: float = 0.0, name: str = ""
    ) -> None:
        self.events = list(events)
        self.batch_size = batch_size
        self.interval = interval
        self.name = name or "list"

    async def run(self, ctx: SourceContext, emit: Emit[T]) -> None:
        ctx.ready()
        for start in range(0, len(self.events), self.batch_size):
            if ctx.stop_requested:
                return
            batch = self.events[start : start + self.batch_size]
            ctx.stats.received += len(batch)
            await emit(batch)
            if self.interval:
                await ctx.sleep(self.interval)


@dataclass
class _Tally:
    batches: int = 0
    closes: int = 0


class CollectSink(Sink[T], Generic[T]):
    """Keeps every event it receives in :attr:`items`, in order.

    A run works on a copy of the sink in its plan; the copies share what they
    keep, so the object you hold sees what its runs received: :attr:`items`,
    :attr:`batches` (how many ``write`` calls) and :attr:`closed` (a run
    closed it). Runs at the same time append to the same list; give each its
    own sink (``pipeline.replace(sink=...)``) to tell them apart.
    """

    def __init__(self, name: str = "") -> None:
        self.items: list[T] = []
        self._tally = _Tally()
        self.name = name or "collect"

    @property
    def batches(self) -> int:
        return self._tally.batches

    @property
    def closed(self) -> bool:
        return self._tally.closes > 0

    async def write(self, batch: list[T]) -> None:
        self.items.extend(batch)
        self._tally.batches += 1

    async def close(self) -> None:
        self._tally.closes += 1


class OperatorHarness(Generic[In, Out]):
    """Drives one synchronous operator the way the pipeline runtime does,
    on a :class:`~flowtrace.clock.ManualClock`, without an event loop.

    ``feed(batch)`` is one ``process`` call (then a ``tick`` if one is due);
    ``advance(seconds)`` moves the clock and runs ``tick`` once if at least
    one interval passed since the last tick, as the runtime does however far
    the clock jumped (both use :class:`~flowtrace.clock.TickSchedule`, so
    ticks fall on the same whole nanoseconds); ``finish()`` runs ``finish``
    and ``close``. Each returns
    what the operator emitted; :attr:`emitted` keeps everything in order and
    :attr:`stats` the stage's counters (``received``, ``emitted``,
    ``dropped``). ``pipeline_stop_requested`` tells whether the operator
    asked the pipeline to stop.
    """

    def __init__(
        self, operator: Operator[In, Out], clock: ManualClock | None = None, name: str = ""
    ) -> None:
        if isinstance(operator, AsyncOperator):
            raise TypeError(
                "OperatorHarness drives synchronous operators; run an AsyncOperator in a Pipeline"
            )
        self.operator = operator
        self.clock = clock or ManualClock()
        self.stats = StageStats(name or operator.stage_name())
        self.reports: list[str] = []
        self.emitted: list[Out] = []
        operator.open(StageContext(self.stats, self.clock, self.reports.append))
        interval = operator.tick_interval
        self._ticks = TickSchedule(self.clock, interval) if interval else None
        self._closed = False

    @property
    def pipeline_stop_requested(self) -> bool:
        return self.operator.pipeline_stop_requested

    def _out(self, items: Iterable[Out]) -> list[Out]:
        items = list(items)
        self.stats.emitted += len(items)
        self.emitted += items
        return items

    def _tick_if_due(self) -> list[Out]:
        if self._ticks is None or not self._ticks.due():
            return []
        return self._out(self.operator.tick())

    def feed(self, batch: Iterable[In]) -> list[Out]:
        """One batch through ``process``, then a due tick; what was emitted."""
        events = list(batch)
        self.stats.received += len(events)
        out = self._out(process_batch(self.operator, events))
        return out + self._tick_if_due()

    def advance(self, seconds: float) -> list[Out]:
        """Move the clock; run a tick if one is due; what was emitted."""
        self.clock.advance(seconds)
        return self._tick_if_due()

    def finish(self) -> list[Out]:
        """End of stream: ``finish`` then ``close``; what was emitted."""
        try:
            return self._out(self.operator.finish())
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.operator.close()
