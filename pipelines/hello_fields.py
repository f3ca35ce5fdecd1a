"""Lesson 3, hello_fields: one row per new process, split like trace_fields().

The message is printed in the kernel with bpf_trace_printk; each trace_pipe
line comes back as typed fields (task, pid, cpu, flags, ts, msg).

    $ flowtrace run pipelines/hello_fields.py
    TIME(s)            COMM             PID    MESSAGE
    2662.260096000     run.sh           26351  Hello, World!
    2662.261689000     run.sh           26351  Hello, World!
    2662.519947000     bash             23850  Hello, World!
    2662.523909000     bash             26370  Hello, World!
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.processes import clone_messages
from flowtrace.trace_pipe import TraceFields

columns: list[Column[TraceFields]] = [
    Column("TIME(s)", lambda e: e.ts, 18, ".9f"),
    Column("COMM", lambda e: e.task, 16),
    Column("PID", lambda e: e.pid, 6),
    Column("MESSAGE", lambda e: e.msg),
]

pipeline = clone_messages("Hello, World!") | ConsoleSink(columns)
