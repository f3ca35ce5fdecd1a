"""Lesson 8, sync_perf_output: lesson 4 through the perf buffer.

The kernel keeps the last sync time in a BPF hash as in lesson 4, but sends
each quick sync as a typed record through BPF_PERF_OUTPUT instead of
printing to trace_pipe. Time is seconds since the first record.

    $ flowtrace run pipelines/sync_perf_output.py    # sync; sync; sync
    Tracing for quick sync's... Ctrl-C to end
    At time 0.00 s: multiple syncs detected, last 106 ms ago
    At time 0.10 s: multiple syncs detected, last 102 ms ago
"""

from collections.abc import Callable

from flowtrace.sinks.console import ConsoleSink, EachRun, RelativeSeconds
from flowtrace.sources.syscalls import QuickSync, quick_syncs


def report() -> Callable[[QuickSync], str]:
    """Each run's line: its time counts from the run's first quick sync."""
    since_first = RelativeSeconds("ts")

    def line(e: QuickSync) -> str:
        ms = e.gap_ns // 1_000_000
        return f"At time {since_first(e):.2f} s: multiple syncs detected, last {ms} ms ago"

    return line


pipeline = quick_syncs(transport="perf") | ConsoleSink(
    line=EachRun(report), header="Tracing for quick sync's... Ctrl-C to end"
)
