"""Lesson 13, disksnoop_tp: lesson 6 on block:block_rq_issue/block_rq_complete.

The tutorial's exercise: the same output from the stable block tracepoints
instead of kprobes. Both share one buffer, so a request's issue arrives
before its completion; the join pairs them by device and sector (struct
request is never dereferenced); size and direction come from the issue.

    $ flowtrace run pipelines/disksnoop_tp.py
    TIME(s)            T  BYTES    LAT(ms)
    2682.835078        R  12288       0.21
    2682.835476        W  131072      0.22
    2682.837780        R  524288      0.18
    2682.837917        W  4096        0.06
"""

from flowtrace import tracepoints
from flowtrace.operators import join
from flowtrace.records import JoinPair
from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.block import BlockComplete, BlockIssue

columns: list[Column[JoinPair[BlockIssue, BlockComplete]]] = [
    Column("TIME(s)", lambda p: p.complete.ts / 1e9, 18, ".6f"),
    Column("T", lambda p: "W" if "W" in p.start.rwbs else "R", 2),
    Column("BYTES", lambda p: p.start.bytes, 7),
    Column(" LAT(ms)", lambda p: p.latency_ns / 1e6, spec="8.2f"),
]

pipeline = (
    tracepoints(("block:block_rq_issue", BlockIssue), ("block:block_rq_complete", BlockComplete))
    | join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False)
    | ConsoleSink(columns)
)
