"""biolatency: block I/O latency as a log2 histogram (bcc's tools/biolatency).

    flowtrace run pipelines/tools/biolatency.py [-m] [-D] [interval [count]]

From issue to completion, both from the block tracepoints (bcc's original
uses kprobes on blk_account_io_*, which this kernel lacks, and dies here),
paired by device and sector. -m: milliseconds; -D: a histogram per disk;
with an interval, one histogram every interval seconds, count times.

    $ flowtrace run pipelines/tools/biolatency.py -D 1 2    # 4 direct 128k writes to loop1
    Tracing block device I/O... Hit Ctrl-C to end.

    disk = vda
         usecs               : count     distribution
             0 -> 1          : 0        |                                        |
    [...]
            64 -> 127        : 0        |                                        |
           128 -> 255        : 3        |****************************************|
           256 -> 511        : 1        |*************                           |

    disk = loop1
         usecs               : count     distribution
             0 -> 1          : 0        |                                        |
    [...]
            16 -> 31         : 1        |********************                    |
            32 -> 63         : 2        |****************************************|
            64 -> 127        : 0        |                                        |
           128 -> 255        : 1        |********************                    |
"""

from typing import Annotated

from flowtrace import Pipeline, tracepoints
from flowtrace.operators import Tumbling, join, log2_histogram
from flowtrace.parameters import Option, Positive
from flowtrace.records import JoinPair
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.sources.block import BlockComplete, BlockIssue


def disk(dev: int) -> str:
    """The name of block device ``dev`` (major << 20 | minor), as the kernel calls it."""
    try:
        with open(f"/sys/dev/block/{dev >> 20}:{dev & 0xFFFFF}/uevent") as f:
            return next(line[8:].strip() for line in f if line.startswith("DEVNAME="))
    except (OSError, StopIteration):
        return f"{dev >> 20}:{dev & 0xFFFFF}"


def device(p: JoinPair[BlockIssue, BlockComplete]) -> int:
    return p.start.dev


def pipeline(
    interval: Positive | None = None,
    count: Positive | None = None,
    *,
    milliseconds: Annotated[bool, Option("-m")] = False,
    disks: Annotated[bool, Option("-D")] = False,
) -> Pipeline:
    """Block I/O latency as a log2 histogram, as bcc's biolatency.

    Args:
        interval: seconds per histogram (default: one histogram, on Ctrl-C)
        count: how many histograms, then stop (default: until Ctrl-C)
        milliseconds: histogram in milliseconds, not microseconds
        disks: a histogram per disk
    """
    unit, divisor = ("msecs", 1_000_000) if milliseconds else ("usecs", 1000)
    histogram = log2_histogram(
        "latency_ns",
        unit=unit,
        divisor=divisor,
        by=device if disks else None,
        every=Tumbling(interval) if interval else None,
        limit=count,
    )
    return (
        tracepoints(
            ("block:block_rq_issue", BlockIssue), ("block:block_rq_complete", BlockComplete)
        )
        | join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False)
        | histogram
        | ConsoleSink(
            header="Tracing block device I/O... Hit Ctrl-C to end.",
            histogram=HistogramStyle(section=lambda key: f"disk = {disk(key['device'])}"),
        )
    )
