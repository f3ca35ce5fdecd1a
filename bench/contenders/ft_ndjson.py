"""flowtrace, every event to an NDJSON file (per-event throughput to disk).

flowtrace's ``NdjsonSink`` with its defaults (attach and loss reports,
fsync on close). The harness reads the file back: the lines of type
``event`` are what was delivered.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.workload import getppid_source
from flowtrace.sinks.ndjson import NdjsonSink


def main(pid: int, path: Path) -> None:
    stats = run(getppid_source(pid) | NdjsonSink(path))
    out = accounting(stats, stats.stages[-1].emitted)
    out["output"] = str(path)
    report(out)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
