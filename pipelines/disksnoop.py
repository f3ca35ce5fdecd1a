"""Lesson 6, disksnoop: each disk request with its size, direction and latency.

The kernel stores each request's issue time in a BPF hash keyed by the
request and computes the latency at completion, as the tutorial does. On
kernels with kprobes and matching headers that key is the struct request
pointer (blk_mq_start_request, blk_account_io_done); here it is the device
and sector of the block:block_rq_issue/complete tracepoints.

    $ flowtrace run pipelines/disksnoop.py     # dd bs=128k count=4 oflag=direct, ...
    TIME(s)            T  BYTES    LAT(ms)
    2680.050439        W  131072      0.41
    2680.050627        W  131072      0.12
    2680.050784        W  131072      0.12
    2680.050969        W  131072      0.15
    2680.052514        R  524288      0.18
    2680.052648        W  4096        0.05
    2680.053879        R  8192        0.09
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.disk import DiskRequest, disk_requests

columns: list[Column[DiskRequest]] = [
    Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".6f"),
    Column("T", lambda e: "W" if e.write else "R", 2),
    Column("BYTES", lambda e: e.bytes, 7),
    Column(" LAT(ms)", lambda e: e.lat_ns / 1e6, spec="8.2f"),
]

pipeline = disk_requests() | ConsoleSink(columns)
