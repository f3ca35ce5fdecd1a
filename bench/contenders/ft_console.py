"""flowtrace, every event printed by ``ConsoleSink`` to standard output.

One line per event: its kernel timestamp (``ts``, nanoseconds), so the
harness reading the pipe can tell how long each took to arrive (the
latency benchmark). Default source and sink settings; with ``--perf`` the
source uses the perf buffer, as lesson 7 (hello_perf_output) does; with
``--latency SECONDS`` the pipeline has that ``latency`` bound.
"""

from __future__ import annotations

import sys

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.workload import Getppid, getppid_source
from flowtrace.sinks.console import ConsoleSink


def _line(event: Getppid) -> str:
    return str(event.ts)


def main(pid: int, transport: str = "auto", latency: float | None = None) -> None:
    pipeline = getppid_source(pid, transport=transport) | ConsoleSink[Getppid](line=_line)
    stats = run(pipeline if latency is None else pipeline.replace(latency=latency))
    report(accounting(stats, stats.stages[-1].emitted))


if __name__ == "__main__":
    options = sys.argv[2:]
    latency = float(options[options.index("--latency") + 1]) if "--latency" in options else None
    main(int(sys.argv[1]), "perf" if "--perf" in options else "auto", latency)
