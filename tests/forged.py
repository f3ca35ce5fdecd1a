"""Recordings written by hand, as a forger would: no flowtrace code writes them."""

from __future__ import annotations

import json
from pathlib import Path

from flowtrace.recorder import field_types
from flowtrace.sources.reads import ReadLatency


def reads_recording(
    path: Path, ats: list[float], *, end_at: float, start: float = 100.0, lost: object = 0
) -> None:
    """A recording of one read (5 us, by ``cat``) per arrival time in ``ats``,
    its header at ``start`` and its end record at ``end_at`` with ``lost``."""
    header = {
        "source": "reads",
        "event": "ReadLatency",
        "fields": field_types(ReadLatency),
        "clock": "monotonic",
        "start": start,
    }
    lines = [{"v": 1, "type": "recording", "name": "RecordingHeader", "data": header}]
    for n, at in enumerate(ats):
        data = {"ts": n, "lat_ns": 5000, "ret": 1, "pid": 7, "tid": 7, "comm": "cat"}
        lines.append({"v": 1, "type": "event", "name": "ReadLatency", "at": at, "data": data})
    end = {"events": len(ats), "received": len(ats), "lost": lost}
    lines.append({"v": 1, "type": "end", "name": "RecordingEnd", "at": end_at, "data": end})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
