"""Test doubles shipped with flowtrace: a source of given events and a sink
that keeps what it receives. Use them to test operators and sinks without a
kernel, and in your own tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from .context import SourceContext
from .stages import Emit, Sink, Source

__all__ = ["CollectSink", "ListSource"]

T = TypeVar("T")


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


class CollectSink(Sink[T], Generic[T]):
    """Keeps every event it receives in :attr:`items`, in order."""

    def __init__(self, name: str = "") -> None:
        self.items: list[T] = []
        self.batches = 0
        self.closed = False
        self.name = name or "collect"

    async def write(self, batch: list[T]) -> None:
        self.items.extend(batch)
        self.batches += 1

    async def close(self) -> None:
        self.closed = True


def values(events: Iterable[Any], field: str) -> list[Any]:
    """The ``field`` of each event, in order."""
    return [getattr(e, field) for e in events]
