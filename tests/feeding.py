"""A source the test feeds by hand, and a bounded wait on a condition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from flowtrace.context import SourceContext
from flowtrace.stages import Emit, Source

T = TypeVar("T")


class FeedSource(Source[T], Generic[T]):
    """Emits the batches the test sends to :attr:`sender` (or numbers with
    :meth:`feed`); ends when the test closes :attr:`sender`."""

    name = "feed"

    def __init__(self, make: Callable[[int], T]) -> None:
        self.make = make
        self.sender, self.receiver = anyio.create_memory_object_stream[list[T]](100)
        self.sent = 0

    async def feed(self, count: int, batch: int | None = None) -> None:
        """Send ``count`` events numbered on from :attr:`sent` (``batch`` at a
        time, else all in one), which grows once all are in: one caller at a
        time, or two number the same events."""
        step = batch or count
        for start in range(self.sent, self.sent + count, step):
            await self.sender.send([self.make(n) for n in range(start, start + step)])
        self.sent += count

    async def run(self, ctx: SourceContext, emit: Emit[T]) -> None:
        ctx.ready()
        async with self.receiver:
            async for batch in self.receiver:
                ctx.stats.received += len(batch)
                await emit(batch)


async def until_true(what: Callable[[], bool], within: float = 20) -> None:
    """Wait until ``what()`` holds, polling; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not what():  # noqa: ASYNC110 - polling a counter
            await anyio.sleep(0.005)  # poll interval of this bounded wait
