"""Lesson 3, hello_fields: one row per new process, with its fields.

Each new task (process or thread) fires sched:sched_process_fork in its
parent; the event's fields arrive typed (ts, pid, comm of the parent, then
the tracepoint's own parent_pid, child_pid, ...), no trace_pipe to parse.

    $ flowtrace run pipelines/hello_fields.py
    TIME(s)            COMM             PID    MESSAGE
    2662.260096000     run.sh           26351  Hello, World!
    2662.261689000     run.sh           26351  Hello, World!
    2662.519947000     bash             23850  Hello, World!
"""

from flowtrace import tracepoint
from flowtrace.sinks.console import Column, ConsoleSink

pipeline = tracepoint("sched:sched_process_fork") | ConsoleSink(
    [
        Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".9f"),
        Column("COMM", lambda e: e.comm, 16),
        Column("PID", lambda e: e.pid, 6),
        Column("MESSAGE", lambda e: "Hello, World!"),
    ]
)
