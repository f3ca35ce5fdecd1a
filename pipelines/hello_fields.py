"""Lesson 3, hello_fields: one row per new process, with time, command and pid.

$ flowtrace run pipelines/hello_fields.py
TIME(s)            COMM             PID    MESSAGE
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.processes import Clone, clones

columns: list[Column[Clone]] = [
    Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".9f"),
    Column("COMM", lambda e: e.comm, 16),
    Column("PID", lambda e: e.pid, 6),
    Column("MESSAGE", lambda e: "Hello, World!"),
]

pipeline = clones() | ConsoleSink(columns)
