"""Lesson 10, disklatency: a log2 histogram of disk I/O latency, on Ctrl-C.

    flowtrace run disklatency [-m] [-T] [interval [count]]

The tutorial's exercise: lesson 6's timing from issue to completion feeding
lesson 9's histogram, with the flags of bcc's biolatency: one histogram on
Ctrl-C, or one every INTERVAL seconds (COUNT times), in microseconds or
(-m) milliseconds, with the time above each (-T). Both block tracepoints
share one buffer, so a request's issue arrives before its completion; the
join pairs them by device and sector.

    $ flowtrace run disklatency
    Tracing... Hit Ctrl-C to end.
    ^C
         usecs               : count     distribution
            16 -> 31         : 0        |                                        |
            32 -> 63         : 3        |******************************          |
            64 -> 127        : 4        |****************************************|
           128 -> 255        : 4        |****************************************|
"""

from typing import Annotated

from flowtrace import Pipeline, tracepoints
from flowtrace.operators import Tumbling, join, log2_histogram
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.sources.block import BlockComplete, BlockIssue


def pipeline(
    interval: Positive | None = None,
    count: Positive | None = None,
    *,
    milliseconds: Annotated[bool, Option("-m")] = False,
    timestamp: Annotated[bool, Option("-T")] = False,
) -> Pipeline:
    """Disk I/O latency as a log2 histogram, as bcc's biolatency.

    Args:
        interval: seconds per histogram (default: one histogram, on Ctrl-C)
        count: how many histograms, then stop (default: until Ctrl-C)
        milliseconds: histogram in milliseconds, not microseconds
        timestamp: print the time (HH:MM:SS) above each histogram
    """
    unit, divisor = ("msecs", 1_000_000) if milliseconds else ("usecs", 1000)
    every = Tumbling(interval) if interval is not None else None
    return (
        tracepoints(
            ("block:block_rq_issue", BlockIssue), ("block:block_rq_complete", BlockComplete)
        )
        | join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False)
        | log2_histogram("latency_ns", unit=unit, divisor=divisor, every=every, limit=count)
        | ConsoleSink(
            header="Tracing... Hit Ctrl-C to end.", histogram=HistogramStyle(timestamp=timestamp)
        )
    )
