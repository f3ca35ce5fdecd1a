"""Lesson 10, disklatency: a log2 histogram of disk I/O latency, on Ctrl-C.

The tutorial's exercise: lesson 6's timing from issue to completion feeding
lesson 9's histogram. Both block tracepoints share one buffer, so a
request's issue arrives before its completion; the join pairs them by
device and sector.

    $ flowtrace run pipelines/disklatency.py
    Tracing... Hit Ctrl-C to end.
    ^C
         usecs               : count     distribution
            16 -> 31         : 0        |                                        |
            32 -> 63         : 3        |******************************          |
            64 -> 127        : 4        |****************************************|
           128 -> 255        : 4        |****************************************|
"""

from flowtrace import tracepoints
from flowtrace.operators import join, log2_histogram
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.block import BlockComplete, BlockIssue

pipeline = (
    tracepoints(("block:block_rq_issue", BlockIssue), ("block:block_rq_complete", BlockComplete))
    | join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False)
    | log2_histogram("latency_ns", unit="usecs", divisor=1000)
    | ConsoleSink(header="Tracing... Hit Ctrl-C to end.")
)
