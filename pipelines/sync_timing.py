"""Lesson 4, sync_timing: syncs less than a second after the previous one.

The kernel keeps the time of the last sync in a BPF hash and prints the gap
in milliseconds with bpf_trace_printk; the lines come back from trace_pipe.
Time is seconds since the first line.

    $ flowtrace run pipelines/sync_timing.py     # sync; sync; sync, 0.1 s apart
    Tracing for quick sync's... Ctrl-C to end
    At time 0.00 s: multiple syncs detected, last 105 ms ago
    At time 0.10 s: multiple syncs detected, last 103 ms ago
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.syscalls import quick_syncs_printed
from flowtrace.trace_pipe import TraceFields


class Report:
    """The tutorial's line for each quick sync."""

    def __init__(self) -> None:
        self.start: float | None = None

    def __call__(self, e: TraceFields) -> str:
        self.start = e.ts if self.start is None else self.start
        return f"At time {e.ts - self.start:.2f} s: multiple syncs detected, last {e.msg} ms ago"


pipeline = quick_syncs_printed() | ConsoleSink(
    line=Report(), header="Tracing for quick sync's... Ctrl-C to end"
)
