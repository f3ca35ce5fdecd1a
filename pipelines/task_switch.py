"""Lesson 16, task_switch: context switches counted by (previous, next) thread.

The tutorial's kprobe on finish_task_switch read prev's pid from its task_struct;
the sched:sched_switch tracepoint gives both pids. Switches to and from flowtrace
itself are left out (its wake-ups would feed back into the counts). Counts are
printed on Ctrl-C (or at the end of --duration).

    $ flowtrace run pipelines/task_switch.py
    ^Ctask_switch[    0-> 6355]=37
    task_switch[    0-> 6349]=37
    task_switch[ 6355->    0]=17
    task_switch[    0->27055]=4
    [...]
"""

import os

from flowtrace import tracepoint
from flowtrace.operators import F, count, filter
from flowtrace.records import CountRow
from flowtrace.sinks.console import ConsoleSink, TableStyle


def row(r: CountRow) -> str:
    return f"task_switch[{r.key['prev_pid']:5d}->{r.key['next_pid']:5d}]={r.count}"


me = os.getpid()
pipeline = (
    tracepoint("sched:sched_switch")
    | filter((F.prev_pid != me) & (F.next_pid != me))
    | count(["prev_pid", "next_pid"])
    | ConsoleSink(table=TableStyle(line=row))
)
