"""Lesson 11, vfsreadlat: a log2 histogram of read latency per interval.

    flowtrace run vfsreadlat [-m] [-T] [interval [count]]

One histogram (microseconds; -m: milliseconds) every INTERVAL seconds
(default 5), COUNT times (default: until Ctrl-C, which prints the partial
interval); -T prints the time above each. The kernel times each vfs_read
from entry to return; where vfs_read has no kprobe or fentry (as here),
read(2) entry to exit, and the header says so.

    $ flowtrace run vfsreadlat 1 2
    Timing read(2) calls: vfs_read() has no kprobe or fentry on this kernel.
    Tracing... Hit Ctrl-C to end.

         usecs               : count     distribution
             0 -> 1          : 24       |****************************************|
             2 -> 3          : 1        |*                                       |
             4 -> 7          : 2        |***                                     |
             8 -> 15         : 11       |******************                      |
            16 -> 31         : 13       |*********************                   |
            32 -> 63         : 1        |*                                       |

         usecs               : count     distribution
             0 -> 1          : 45       |****************************************|
             2 -> 3          : 3        |**                                      |
             4 -> 7          : 3        |**                                      |
             8 -> 15         : 44       |*************************************** |
            16 -> 31         : 5        |****                                    |
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.errors import AttachError
from flowtrace.operators import Tumbling, log2_histogram
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.sources.reads import READ_SYSCALL, read_latencies, read_latency_scheme


def pipeline(
    interval: Positive = 5,
    count: Positive | None = None,
    *,
    milliseconds: Annotated[bool, Option("-m")] = False,
    timestamp: Annotated[bool, Option("-T")] = False,
) -> Pipeline:
    """Read latency as a log2 histogram every INTERVAL seconds, as bcc's vfsreadlat.

    Args:
        interval: seconds per histogram
        count: how many histograms, then stop (default: until Ctrl-C)
        milliseconds: histogram in milliseconds, not microseconds
        timestamp: print the time (HH:MM:SS) above each histogram
    """
    source = read_latencies()
    try:
        timed = read_latency_scheme(source.plan())
    except AttachError:
        timed = "vfs_read()"  # the run reports why it cannot attach
    header = ["Tracing... Hit Ctrl-C to end."]
    if timed == READ_SYSCALL:
        header.insert(0, "Timing read(2) calls: vfs_read() has no kprobe or fentry on this kernel.")
    unit, divisor = ("msecs", 1_000_000) if milliseconds else ("usecs", 1000)
    every = Tumbling(interval)
    histogram = log2_histogram("lat_ns", unit=unit, divisor=divisor, every=every, limit=count)
    style = HistogramStyle(timestamp=timestamp)
    return source | histogram | ConsoleSink(header=header, histogram=style)
