"""Lesson 5, sync_count: lesson 4 plus the count of all syncs.

The BPF hash of lesson 4 gets a second key counting every sync, quick or
not; each quick sync prints its gap and the count so far.

    $ flowtrace run pipelines/sync_count.py      # 3 syncs, a pause, 2 syncs
    Tracing for quick sync's... Ctrl-C to end
    At time 0.00 s: multiple syncs detected, last 103 ms ago (sync count 2)
    At time 0.10 s: multiple syncs detected, last 104 ms ago (sync count 3)
    At time 1.51 s: multiple syncs detected, last 203 ms ago (sync count 5)
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.syscalls import quick_syncs_printed
from flowtrace.trace_pipe import TraceFields


class Report:
    """The tutorial's line for each quick sync, with the running count."""

    def __init__(self) -> None:
        self.start: float | None = None

    def __call__(self, e: TraceFields) -> str:
        self.start = e.ts if self.start is None else self.start
        ms, count = e.msg.split()
        return (
            f"At time {e.ts - self.start:.2f} s: multiple syncs detected, last {ms} ms ago"
            f" (sync count {count})"
        )


pipeline = quick_syncs_printed(count=True) | ConsoleSink(
    line=Report(), header="Tracing for quick sync's... Ctrl-C to end"
)
