"""Lesson 16, task_switch: context switches counted by (previous, next) thread.

The tutorial's kprobe on finish_task_switch (finish_task_switch.isra.0 on
recent compilers) where it can be used, else the sched:sched_switch
tracepoint. Counts are printed on Ctrl-C (or at the end of --duration).

    $ flowtrace run pipelines/task_switch.py
    ^Ctask_switch[    0-> 6355]=37
    task_switch[    0-> 6349]=37
    task_switch[    0->   15]=27
    task_switch[ 6355->    0]=17
    task_switch[ 6349->    0]=12
    task_switch[   15->    0]=6
    task_switch[    0->27055]=4
    [...]
"""

from flowtrace.operators import count
from flowtrace.records import CountRow
from flowtrace.sinks.console import ConsoleSink, TableStyle
from flowtrace.sources.sched import task_switches


def row(r: CountRow) -> str:
    return f"task_switch[{r.key['prev_pid']:5d}->{r.key['curr_pid']:5d}]={r.count}"


pipeline = (
    task_switches() | count(["prev_pid", "curr_pid"]) | ConsoleSink(table=TableStyle(line=row))
)
