"""Recording a source's events as they arrive, for replay without a kernel.

A recording is NDJSON in the schema of :mod:`flowtrace.schema`: a
``recording`` header, one ``event`` record per event with ``at`` (the
pipeline clock when the source handed its batch on; events of one batch
share it), and an ``end`` record. :mod:`flowtrace.replay` reads it back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
from msgspec.structs import fields

from .clock import Clock, MonotonicClock, wall_time
from .context import SourceContext
from .events import Event, layout_of
from .linefile import open_output, write_lines
from .schema import RecordEncoder, RecordingEnd, RecordingHeader
from .stages import Emit, Source

__all__ = ["RecordingSource", "field_types"]

T = TypeVar("T")


def field_types(event: type[Any]) -> list[tuple[str, str]]:
    """(name, type) of each field of ``event``, as a recording header lists
    them: the C type for an :class:`~flowtrace.events.Event`, the Python type
    for another msgspec Struct."""
    if not issubclass(event, Event):
        return [(f.name, getattr(f.type, "__name__", repr(f.type))) for f in fields(event)]
    return [(f.name, f.ktype.spelled()) for f in layout_of(event).fields]


class RecordingSource(Source[T], Generic[T]):
    """Runs ``source`` unchanged and writes every batch it emits to ``path``
    before passing it on.

    Takes the wrapped source's name and event types, so counters and replays
    read as the original.
    Holds nothing in memory: each batch is written with ``os.write`` before
    it goes downstream, so the recording has every event the source emitted
    even if the process is killed. A write
    error truncates the file back to its last whole line and fails the
    source (and so the pipeline). The ``end`` record is written, and the file
    fsynced, on every exit of ``source.run`` (end, stop, failure,
    cancellation); only a killed process leaves a recording without one.
    The file is truncated when recording starts.
    """

    def __init__(self, source: Source[T], path: str | os.PathLike[str]) -> None:
        self.source = source
        self.path = Path(path)
        self.name = source.stage_name()
        self._encoder = RecordEncoder()

    def fresh(self) -> RecordingSource[T]:
        """A recorder of a fresh copy of the recorded source, for one run."""
        return RecordingSource(self.source.fresh(), self.path)

    def event_type(self) -> type[Any] | None:
        return self.source.event_type()

    def event_types(self) -> tuple[type[Any], ...]:
        return self.source.event_types()

    def replay_types(self) -> tuple[type[Any] | str, ...]:
        return self.source.replay_types()

    def describe(self) -> list[str]:
        return [*self.source.describe(), f"  recording its events to {self.path}"]

    def header(self, start: float, clock: Clock) -> RecordingHeader:
        types = self.event_types()
        several = len(types) > 1
        event = types[0] if len(types) == 1 else None
        return RecordingHeader(
            source=self.name,
            event=event.__name__ if event else None,
            fields=field_types(event) if event else None,
            clock="monotonic" if isinstance(clock, MonotonicClock) else type(clock).__name__,
            start=start,
            events=[(e.__name__, field_types(e)) for e in types] if several else None,
            wall_start=wall_time(clock, start),
        )

    async def run(self, ctx: SourceContext, emit: Emit[T]) -> None:
        file = _LineFile(self.path)
        recorded = 0

        def start() -> None:
            # the header's start is when the source is ready: operators open
            # then, so a replay starting its clock there aligns their windows
            if file.size == 0:
                file.write(self._encoder.json_line(self.header(ctx.clock.now(), ctx.clock)))

        async def record(batch: list[T]) -> None:
            nonlocal recorded
            start()
            file.write(self._encoder.json_lines(batch, at=ctx.clock.now()))
            recorded += len(batch)
            await emit(batch)

        ctx.call_on_ready(start)
        try:
            await self.source.run(ctx, record)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if file.healthy:
                        start()
                        end = RecordingEnd(
                            events=recorded, received=ctx.stats.received, lost=ctx.stats.lost
                        )
                        file.write(self._encoder.json_line(end, at=ctx.clock.now()))
                finally:
                    await file.close()


class _LineFile:
    """A file written in whole lines (:func:`~flowtrace.linefile.write_lines`):
    a failed write is cut back to the last whole line, and the file is not
    written again."""

    def __init__(self, path: Path) -> None:
        self.fd = open_output(path, 0o600)  # recordings may hold command lines
        self.size = 0
        self.healthy = True

    def write(self, data: bytes) -> None:
        try:
            self.size = write_lines(self.fd, data, self.size)
        except BaseException:
            self.healthy = False
            raise

    async def close(self) -> None:
        fd, self.fd = self.fd, -1
        try:
            await anyio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)
