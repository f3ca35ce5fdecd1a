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

from flowtrace import Pipeline, tracepoints
from flowtrace.arguments import Arguments, positive_int
from flowtrace.operators import Tumbling, join, log2_histogram
from flowtrace.records import JoinPair
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.sources.block import BlockComplete, BlockIssue

USAGE = "[-m] [-D] [interval [count]]"


def disk(dev: int) -> str:
    """The name of block device ``dev`` (major << 20 | minor), as the kernel calls it."""
    try:
        with open(f"/sys/dev/block/{dev >> 20}:{dev & 0xFFFFF}/uevent") as f:
            return next(line[8:].strip() for line in f if line.startswith("DEVNAME="))
    except (OSError, StopIteration):
        return f"{dev >> 20}:{dev & 0xFFFFF}"


def device(p: JoinPair[BlockIssue, BlockComplete]) -> int:
    return p.start.dev


def pipeline(args: list[str]) -> Pipeline:
    options = Arguments("pipelines/tools/biolatency.py", USAGE)
    options.add_argument("-m", "--milliseconds", action="store_true")
    options.add_argument("-D", "--disks", action="store_true")
    options.add_argument("interval", type=positive_int, nargs="?")
    options.add_argument("count", type=positive_int, nargs="?")
    given = options.parse(args)
    unit, divisor = ("msecs", 1_000_000) if given.milliseconds else ("usecs", 1000)
    histogram = log2_histogram(
        "latency_ns",
        unit=unit,
        divisor=divisor,
        by=device if given.disks else None,
        every=Tumbling(given.interval) if given.interval else None,
        limit=given.count,
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
