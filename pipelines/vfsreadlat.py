"""Lesson 11, vfsreadlat: a log2 histogram of read latency per interval.

    flowtrace run pipelines/vfsreadlat.py [interval [count]]

One histogram (microseconds) every INTERVAL seconds (default 5), COUNT
times (default: until Ctrl-C, which prints the partial interval). The
kernel times each vfs_read from entry to return; where vfs_read has no
kprobe or fentry (as here), read(2) entry to exit, and the header says so.

    $ flowtrace run pipelines/vfsreadlat.py 1 2
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

from flowtrace import Pipeline
from flowtrace.errors import AttachError, PipelineFileError
from flowtrace.operators import Tumbling, log2_histogram
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.reads import READ_SYSCALL, read_latencies, read_latency_scheme

USAGE = "run flowtrace run pipelines/vfsreadlat.py [interval [count]] with positive integers"


def _positive(text: str) -> bool:
    """Whether ``text`` is a positive integer in ASCII digits ("²" is a digit, not a number)."""
    return text.isascii() and text.isdecimal() and int(text) > 0


def pipeline(args: list[str]) -> Pipeline:
    if len(args) > 2 or not all(_positive(a) for a in args):
        raise PipelineFileError(f"vfsreadlat.py: bad arguments {' '.join(args)!r}: {USAGE}")
    interval = int(args[0]) if args else 5
    count = int(args[1]) if len(args) > 1 else None
    source = read_latencies()
    try:
        timed = read_latency_scheme(source.plan())
    except AttachError:
        timed = "vfs_read()"  # the run reports why it cannot attach
    header = ["Tracing... Hit Ctrl-C to end."]
    if timed == READ_SYSCALL:
        header.insert(0, "Timing read(2) calls: vfs_read() has no kprobe or fentry on this kernel.")
    every = Tumbling(interval)
    histogram = log2_histogram("lat_ns", unit="usecs", divisor=1000, every=every, limit=count)
    return source | histogram | ConsoleSink(header=header)
