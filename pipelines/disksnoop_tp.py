"""Lesson 13, disksnoop_tp: lesson 6 on block:block_rq_issue/block_rq_complete.

The tutorial's exercise: the same output from the stable block tracepoints
instead of kprobes. Requests are keyed in the kernel by device and sector,
since struct request must not be dereferenced from a tracepoint whose
kernel headers may not match; size and direction come from the
tracepoints' bytes and rwbs fields.

    $ flowtrace run pipelines/disksnoop_tp.py
    TIME(s)            T  BYTES    LAT(ms)
    2682.835078        R  12288       0.21
    2682.835476        W  131072      0.22
    2682.835666        W  131072      0.13
    2682.837780        R  524288      0.18
    2682.837917        W  4096        0.06
    2683.546143        W  16384       0.12
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.disk import DiskRequest, disk_requests

columns: list[Column[DiskRequest]] = [
    Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".6f"),
    Column("T", lambda e: "W" if e.write else "R", 2),
    Column("BYTES", lambda e: e.bytes, 7),
    Column(" LAT(ms)", lambda e: e.lat_ns / 1e6, spec="8.2f"),
]

pipeline = disk_requests(tracepoints_only=True) | ConsoleSink(columns)
