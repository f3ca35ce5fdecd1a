"""Agents and collectors as separate ``flowtrace`` processes, for the fleet tests.

An agent replays a known recording of disk latencies (``--replay``, so no
kernel load is needed) through a log2 histogram per window, writes its own
histograms to an NDJSON file and publishes them with ``--sink nats:...``.
The collector is ``pipelines/fleet_disklatency.py:collector``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from flowtrace.recorder import field_types
from flowtrace.schema import RecordEncoder, RecordingEnd, RecordingHeader

__all__ = [
    "COLLECTOR",
    "Agent",
    "DiskLatency",
    "Process",
    "buckets_of",
    "cli_env",
    "read_ndjson",
    "unix_seconds",
    "write_recording",
]

ROOT = Path(__file__).resolve().parent.parent
FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))
COLLECTOR = str(ROOT / "pipelines" / "fleet_disklatency.py") + ":collector"

AGENT_SOURCE = '''
from __future__ import annotations
from typing import Any
import msgspec
from flowtrace.operators import Tumbling, log2_histogram
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.stages import Source


class DiskLatency(msgspec.Struct):
    ts: int
    lat_ns: int


class Recorded(Source[DiskLatency]):
    name = "disk"

    def event_type(self) -> type[DiskLatency]:
        return DiskLatency

    async def run(self, ctx: Any, emit: Any) -> None:
        raise RuntimeError("replay a recording: flowtrace run --replay REC")


def pipeline(out: str, seconds: float) -> Any:
    return (
        Recorded()
        | log2_histogram("lat_ns", unit="usecs", divisor=1000, every=Tumbling(seconds))
        | NdjsonSink(out, reports=False)
    )
'''


class DiskLatency(msgspec.Struct):
    """What the agent pipeline's source emits (same fields as in AGENT_SOURCE)."""

    ts: int
    lat_ns: int


def cli_env(tmp: Path) -> dict[str, str]:
    """The environment for ``flowtrace`` processes running this tree: its
    code first on the path, and its entry points (``--sink nats``) as an
    installed ``flowtrace`` would declare them, whatever is installed."""
    site = tmp / "site"
    info = site / "flowtrace-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowtrace\nVersion: 0.1.0\n")
    lines = []
    group = None
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("["):
            found = re.fullmatch(r'\[project\.entry-points\."([\w.]+)"\]', line)
            group = found.group(1) if found else None
            if group:
                lines.append(f"[{group}]")
        elif group and "=" in line:
            name, _, target = line.partition("=")
            lines.append(f"{name.strip()} = {target.strip().strip(chr(34))}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{site}:{ROOT}"
    return env


def write_recording(
    path: Path, host: int, seconds: float, per_second: int, *, wall_start: float
) -> list[DiskLatency]:
    """A recording of ``seconds`` of disk latencies, ``per_second`` events a
    second in batches of 10 ms; latencies depend on the event's number and
    grow 4-fold from one ``host`` to the next (host 3 is the slowest). Returns the events."""
    encoder = RecordEncoder()
    start = 1000.0
    header = RecordingHeader(
        source="disk",
        event="DiskLatency",
        fields=field_types(DiskLatency),
        clock="monotonic",
        start=start,
        wall_start=wall_start,
    )
    lines = [encoder.json_line(header)]
    events: list[DiskLatency] = []
    batches = round(seconds * 100)
    per_batch = max(1, per_second // 100)
    for b in range(batches):
        at = start + (b + 1) * 0.01
        batch = []
        for i in range(per_batch):
            n = b * per_batch + i
            lat_us = (1 + (n * 7919 + host * 104729) % 997) * 4**host
            batch.append(DiskLatency(ts=round(at * 1e9) + i, lat_ns=lat_us * 1000 + 17))
        events += batch
        lines.append(encoder.json_lines(batch, at=at))
    end = RecordingEnd(events=len(events), received=len(events), lost=0)
    lines.append(encoder.json_line(end, at=start + seconds))
    path.write_bytes(b"".join(lines))
    return events


def buckets_of(records: list[dict[str, Any]]) -> Counter[tuple[int, int]]:
    """Histogram buckets of NDJSON histogram records, added up."""
    total: Counter[tuple[int, int]] = Counter()
    for record in records:
        if record["type"] == "histogram":
            for b in record["data"]["buckets"]:
                total[(b["low"], b["high"])] += b["count"]
    return +total


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Process:
    """A ``flowtrace run`` process with its stderr in a file. Every one
    started is in :attr:`started` until :meth:`end_all` ends it."""

    started: ClassVar[list[Process]] = []

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [FLOWTRACE, "run", *args], stdout=subprocess.DEVNULL, stderr=err, env=env
            )
        Process.started.append(self)

    @classmethod
    def end_all(cls) -> None:
        """Kill what still runs (a test failed midway) and reap every process."""
        while cls.started:
            process = cls.started.pop().process
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    def stderr(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def interrupt(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


class Agent(Process):
    """An agent replaying ``recording``; its own histograms go to ``out``."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        recording: Path,
        servers: list[str],
        env: dict[str, str],
        *,
        window: float,
        realtime: bool,
        extra: str = "",
        drain_timeout: float | None = None,
    ) -> None:
        pipeline = tmp / "agent.py"
        if not pipeline.exists():
            pipeline.write_text(AGENT_SOURCE)
        self.name = name
        self.out = tmp / f"{name}.ndjson"
        spec = "nats:" + ",".join(servers) + f",host={name},backoff_max=0.5{extra}"
        args = ["--replay", str(recording), "--sink", spec]
        if realtime:
            args.append("--realtime")
        if drain_timeout is not None:  # the sink's close is bounded by it too
            args += ["--drain-timeout", str(drain_timeout)]
        super().__init__(
            [*args, f"{pipeline}:pipeline", str(self.out), str(window)],
            env,
            tmp / f"{name}.err",
        )

    def produced(self) -> int:
        """Records its histogram operator produced (what the sinks received)."""
        return len(read_ndjson(self.out))

    def accounting(self) -> tuple[int, int, dict[str, int]]:
        """(records the NATS sink received, acknowledged, dropped by reason)."""
        err = self.stderr()
        acked = re.search(r"nats: (\d+) records acknowledged by JetStream", err)
        line = re.search(r"flowtrace: nats: (\d+) in, \d+ out(.*)", err)
        assert acked and line, err
        dropped = {r: int(n) for n, r in re.findall(r"(\d+) dropped \((\w+)\)", line.group(2))}
        return int(line.group(1)), int(acked.group(1)), dropped


def unix_seconds(iso: str) -> float:
    """Unix seconds of an NDJSON wall-clock time (ISO 8601, UTC)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
