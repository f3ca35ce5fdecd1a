"""Newline-delimited JSON to a file or standard output (schema: ``flowtrace/schema.py``)."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from flowtrace.context import StageContext
from flowtrace.linefile import is_pipe, open_output, write_lines, write_to_pipe
from flowtrace.schema import RecordEncoder
from flowtrace.sinkspec import SinkSpecError, parse_options, parse_size
from flowtrace.stages import Sink

from .reporting import Reporter

__all__ = ["NdjsonSink"]


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise ValueError(f"{text!r}: write yes or no")
    return text == "yes"


class NdjsonSink(Sink[Any]):
    """Writes one JSON record per line to ``path`` (``"-"``: standard output).

    Each batch is encoded with one reused msgspec encoder and written with
    ``os.write`` before ``write`` returns: the sink holds nothing in memory
    between batches, so everything it accepted is in the file (the page
    cache) even if the process is killed. Attach and loss records are written
    before the batch during which they arose; ``close`` writes the summary,
    then ``fsync``\\ s and closes the file, on every exit path (end of input,
    Ctrl-C, SIGTERM, a failing stage). Lines are never split: a write error
    truncates the file back to its last whole line, counts the batch as
    ``dropped["write_error"]`` and fails the pipeline.

    The file is truncated when the sink opens. With ``max_bytes``, it is
    rotated before it would grow past that size, at a line boundary
    (``PATH`` -> ``PATH.1`` -> ... -> ``PATH.<backups>``, the oldest deleted);
    a single line longer than ``max_bytes`` gets a file of its own. Writes
    happen on the event loop (page-cache writes are microseconds); ``fsync``
    runs in a worker thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "-",
        *,
        max_bytes: int | None = None,
        backups: int = 5,
        reports: bool = True,
        name: str = "ndjson",
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if backups < 1:
            raise ValueError("backups must be at least 1")
        if str(path) == "-" and max_bytes is not None:
            raise ValueError("standard output cannot be rotated; write to a file to use max_bytes")
        self.path = None if str(path) == "-" else Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.reports = reports
        self.name = name
        self._encoder = RecordEncoder()
        self._fd = -1

    @classmethod
    def from_spec(cls, argument: str) -> NdjsonSink:
        """``PATH[,rotate=SIZE][,backups=N][,reports=no]``; ``PATH`` ``-`` is
        standard output; ``reports=no`` leaves out attach, loss and summary records.

        Raises :class:`SinkSpecError` when ``PATH``'s directory does not exist
        or ``PATH`` is itself a directory."""
        path, *rest = argument.split(",")
        if not path:
            raise SinkSpecError("ndjson needs a path: --sink ndjson:PATH or --sink ndjson:-")
        options = parse_options(rest, {"rotate": parse_size, "backups": int, "reports": _yes_no})
        if path != "-" and not Path(path).parent.is_dir():
            raise SinkSpecError(f"no directory {str(Path(path).parent)!r} for {path!r}")
        if path != "-" and Path(path).is_dir():
            example = f"{path.rstrip('/')}/out.ndjson"
            raise SinkSpecError(f"{path!r} is a directory: name a file in it, e.g. {example}")
        return cls(
            path,
            max_bytes=options.get("rotate"),
            backups=options.get("backups", 5),
            reports=options.get("reports", True),
        )

    def reports_pipeline(self) -> bool:
        return self.reports

    async def open(self, ctx: StageContext) -> None:
        """Open the file. A FIFO without a reader is waited for (the wait is
        reported once and ends with the run's stop), never blocking the event
        loop."""
        await super().open(ctx)
        self._reporter = Reporter(ctx.pipeline)
        self._committed = 0  # bytes of the current _write call that are in the file
        waiting = False
        while True:
            try:
                self._open_file()
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                    raise
            if not waiting:
                waiting = True
                ctx.report(f"waiting for a reader of the FIFO {self.path}")
            await anyio.sleep(0.05)

    def _open_file(self) -> None:
        if self.path is None:
            self._fd, self._regular = sys.stdout.fileno(), False
        else:
            # non-blocking: opening a FIFO must not wait for its reader, and
            # writes to a pipe wait on the event loop (see _write_pipe)
            self._fd = open_output(self.path, 0o644, nonblocking=True)
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._pipe = is_pipe(self._fd)
        self._size = 0

    async def write(self, batch: list[Any]) -> None:
        """Write the due report records, then ``batch``. If either fails, the
        batch's events not in the file are counted as ``write_error``."""
        data = b""
        self._committed = 0
        try:
            if self.reports:
                due = self._reporter.due()
                if due:
                    await self._write(self._encoder.json_lines(due))
            self._committed = 0
            data = self._encoder.json_lines(batch)
            await self._write(data)
        except BaseException:
            written = data[: self._committed].count(b"\n")
            self.ctx.stats.drop("write_error", len(batch) - written)
            raise

    async def close(self) -> None:
        if self._fd < 0:
            return
        try:
            if self.reports:
                await self._write(self._encoder.json_lines(self._reporter.final()))
        finally:
            await self._release()

    async def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if self.path is None:
            return
        try:
            if self._regular:
                await anyio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)

    async def _write(self, data: bytes) -> None:
        if self.path is None:
            sys.stdout.flush()  # keep order with other writers of stdout
        while data:
            room = len(data)
            if self.max_bytes is not None and self._size + len(data) > self.max_bytes:
                cut = data.rfind(b"\n", 0, max(self.max_bytes - self._size, 0)) + 1
                if cut == 0 and self._size > 0:
                    await self._rotate()
                    continue
                room = cut or data.index(b"\n") + 1
            chunk = memoryview(data)[:room]
            if self._pipe:
                await self._write_pipe(chunk)
            else:
                self._size = write_lines(self._fd, chunk, self._size, cut=self._regular)
                self._committed += room
            data = data[room:]
            if data:
                await self._rotate()

    async def _write_pipe(self, data: memoryview) -> None:
        """Write to a pipe, FIFO or terminal without ever blocking the event
        loop (:func:`~flowtrace.linefile.write_to_pipe`). A reader that stops
        reading holds this write, not the run: a stop's deadline cancels it."""
        await write_to_pipe(self._fd, data, self._wrote)

    def _wrote(self, n: int) -> None:
        self._committed += n
        self._size += n

    async def _rotate(self) -> None:
        assert self.path is not None
        with anyio.CancelScope(shield=True):  # a batch is never cut by cancellation
            await self._release()
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._open_file()
