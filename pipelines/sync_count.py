"""Lesson 5, sync_count: lesson 4 plus the count of all syncs.

The tutorial keeps the time of the last sync and the count of all syncs in
a BPF hash. Here they are plain operators: ``running_count()`` numbers
every sync (``seq``) and adds the gap to the previous one (``gap``, in
nanoseconds), and a filter keeps the quick ones. The planner places both
in the BPF program (``flowtrace explain pipelines/sync_count.py``), so
only quick syncs leave the kernel, as in the tutorial.

    $ flowtrace run pipelines/sync_count.py      # 3 syncs, a pause, 2 syncs
    Tracing for quick sync's... Ctrl-C to end
    At time 0.00 s: multiple syncs detected, last 103 ms ago (sync count 2)
    At time 0.10 s: multiple syncs detected, last 104 ms ago (sync count 3)
    At time 1.51 s: multiple syncs detected, last 203 ms ago (sync count 5)
"""

from collections.abc import Callable
from typing import Any

from flowtrace import syscall_entry
from flowtrace.operators import F, filter, running_count
from flowtrace.sinks.console import ConsoleSink, EachRun, RelativeSeconds
from flowtrace.sources.syscalls import QUICK_NS


def report() -> Callable[[Any], str]:
    """Each run's line: its time counts from the run's first quick sync."""
    since_first = RelativeSeconds("ts")

    def line(e: Any) -> str:  # the event type is read from the tracepoint's format
        return (
            f"At time {since_first(e):.2f} s: multiple syncs detected,"
            f" last {e.gap // 1_000_000} ms ago (sync count {e.seq})"
        )

    return line


pipeline = (
    syscall_entry("sync")
    | running_count()
    | filter((F.seq > 1) & (F.gap < QUICK_NS))
    | ConsoleSink(line=EachRun(report), header="Tracing for quick sync's... Ctrl-C to end")
)
