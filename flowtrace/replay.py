"""Replaying a recording without root or bcc: a pipeline's source replaced
by the recorded events, on the recorded timeline (see :mod:`flowtrace.recording`
for reading and checking the file)."""

from __future__ import annotations

import itertools
import os
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from .clock import ManualClock
from .context import SourceContext
from .recording import RecordingReader, ReplayError, replay_event
from .stages import Emit, Pipeline, Source
from .stats import StageStats

__all__ = ["RecordingReader", "ReplayError", "ReplaySource", "replay"]

E = TypeVar("E", bound=msgspec.Struct)


class ReplaySource(Source[E], Generic[E]):
    """Emits the events of a recording, batch by batch, as they were recorded.

    With a :class:`~flowtrace.clock.ManualClock` as the pipeline clock
    (``realtime=False``, what :func:`replay` sets up) the replay runs on the
    recorded timeline as fast as the pipeline can go: before each batch the
    clock is set to the batch's arrival time, and the next step waits until
    every stage has taken what was emitted (read from the run's counters,
    ``ctx.pipeline``), so each operator sees
    each batch at its recorded time and ticks on that timeline. At the end
    the clock moves to the time the recording stopped. With ``realtime`` the
    source sleeps between batches as long as the recording did.

    Counters read as the recorded source's: ``received`` counts replayed
    events, ``lost`` is what the recorded source reported lost. A problem in
    the file raises :class:`ReplayError` at its line, after the batches
    before it went downstream.
    """

    def __init__(
        self, reader: RecordingReader[E], *, realtime: bool = False, name: str | None = None
    ) -> None:
        self.reader = reader
        self.event = reader.event
        self._types = reader.types
        self.realtime = realtime
        self.name = name or reader.header.source

    def event_type(self) -> type[E]:
        return self.event

    def event_types(self) -> tuple[type[Any], ...]:
        return tuple(self._types)

    def describe(self) -> list[str]:
        pace = "in real time" if self.realtime else "as fast as possible"
        what = f"{self.event.__name__} replayed from {self.reader.path}"
        return [f"source {self.name}: {what} {pace}"]

    async def run(self, ctx: SourceContext, emit: Emit[E]) -> None:
        ctx.ready()
        offset = ctx.clock.now() - self.reader.header.start if self.realtime else 0.0
        for at, batch in self.reader:
            if ctx.stop_requested:
                return
            await self._advance(ctx, at + offset)
            ctx.stats.received += len(batch)
            await emit(batch)
        end = self.reader.end
        assert end is not None
        ctx.stats.lost = end.lost
        await self._advance(ctx, self.reader.end_at + offset)

    async def _advance(self, ctx: SourceContext, when: float) -> None:
        """Sleep until ``when`` in real time, or let the pipeline take what
        it was given and then move the virtual clock to ``when``."""
        clock = ctx.clock
        if self.realtime:
            await ctx.sleep(max(0.0, when - clock.now()))
        elif isinstance(clock, ManualClock):
            await self._settle(ctx)
            clock.advance(max(0.0, when - clock.now()))
        else:
            await anyio.lowlevel.checkpoint()

    async def _settle(self, ctx: SourceContext) -> None:
        """Wait until every stage took what it was given: the counters show
        it, and stay unchanged over two passes of the event loop (a stage
        between handing a batch on and counting it makes progress on each)."""
        chain = ctx.pipeline.chain
        last: list[tuple[int, int, int]] = []
        steady = spins = 0
        while True:
            now = [(s.received, s.emitted, s.dropped_total) for s in chain]
            steady = steady + 1 if now == last and _taken(chain) else 0
            if steady >= 2 or not chain:
                return
            last = now
            spins += 1
            if spins < 1000:
                await anyio.lowlevel.checkpoint()
            else:  # a stage waits on something outside (a slow peer): do not spin
                await anyio.sleep(0.001)


def _taken(chain: list[StageStats]) -> bool:
    """Every stage received what the one before emitted, and the last (the
    sink) finished writing it."""
    pairs = itertools.pairwise(chain)
    return all(down.received == up.emitted for up, down in pairs) and (
        chain[-1].emitted == chain[-1].received
    )


def replay(
    pipeline: Pipeline, path: str | os.PathLike[str], *, realtime: bool = False, check: bool = True
) -> Pipeline:
    """``pipeline`` rebuilt to read its source's events from the recording at
    ``path``: the source becomes a :class:`ReplaySource` of the original
    source's ``event`` type, and, unless ``realtime``, the clock a
    :class:`ManualClock` starting at the recording's start. With ``check``
    the whole file is validated first, so a bad recording fails before
    anything runs."""
    types = replay_event(pipeline.source, path)
    if types is None:
        raise ReplayError(
            f"source {pipeline.source.stage_name()!r} declares no event type (an `event`"
            " attribute naming a msgspec Struct, as KernelSource has); it cannot be replayed"
        )
    reader = RecordingReader(path, types)
    if check:
        reader.check()
    source = ReplaySource(reader, realtime=realtime, name=pipeline.source.stage_name())
    header = reader.header
    clock = None if realtime else ManualClock(header.start, wall_start=header.wall_start)
    return pipeline.replace(source=source, clock=clock)
