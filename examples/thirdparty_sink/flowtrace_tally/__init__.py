"""An example third-party sink: counts the records a pipeline produces, by
type and class, and writes the tally as one JSON object when it closes.

Registered through the ``flowtrace.sinks`` entry-point group (see this
folder's ``pyproject.toml``), so once installed it works from the command
line for any pipeline: ``flowtrace run --sink tally:counts.json PIPELINE``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio.to_thread

from flowtrace import Sink
from flowtrace.sinkspec import SinkSpecError

__all__ = ["TallySink"]


class TallySink(Sink[Any]):
    """Counts records by ``kind`` and class name; holds one counter per pair.

    ``close`` writes ``{"counts": {"event/SyncCall": 3, ...}, "total": N}`` to
    ``path`` (through a temporary file and a rename, so the file is whole or
    absent) and fsyncs it in a worker thread, off the event loop. Drops nothing.
    """

    name = "tally"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.counts: dict[str, int] = {}

    @classmethod
    def from_spec(cls, argument: str) -> TallySink:
        """``--sink tally:PATH``."""
        if not argument:
            raise SinkSpecError("tally needs a path: --sink tally:PATH")
        return cls(argument)

    async def write(self, batch: list[Any]) -> None:
        for item in batch:
            label = f"{getattr(type(item), 'kind', 'value')}/{type(item).__name__}"
            self.counts[label] = self.counts.get(label, 0) + 1

    async def close(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w") as out:
            json.dump({"counts": self.counts, "total": sum(self.counts.values())}, out)
            out.flush()
            # fsync blocks for as long as the disk takes: in a worker thread,
            # never on the event loop (see docs/sinks.md)
            await anyio.to_thread.run_sync(os.fsync, out.fileno())
        partial.replace(self.path)
