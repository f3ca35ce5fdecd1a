"""runqlat: how long runnable threads wait for a CPU, as a log2 histogram
(bcc's tools/runqlat).

    flowtrace run pipelines/tools/runqlat.py [-m] [-p TID] [interval [count]]

From the scheduler's tracepoints: a thread queued by a wakeup or left
runnable when preempted, until sched_switch puts it on a CPU (see
flowtrace.sources.runqueue). -m: milliseconds; -p: one thread (the kernel's
pid, a thread id); with an interval, one histogram every interval seconds,
count times.

    $ flowtrace run pipelines/tools/runqlat.py 1 1
    Tracing run queue latency... Hit Ctrl-C to end.

         usecs               : count     distribution
             0 -> 1          : 11       |*                                       |
             2 -> 3          : 20       |***                                     |
             4 -> 7          : 63       |**********                              |
             8 -> 15         : 244      |****************************************|
            16 -> 31         : 127      |********************                    |
            32 -> 63         : 36       |*****                                   |
            64 -> 127        : 63       |**********                              |
           128 -> 255        : 28       |****                                    |
           256 -> 511        : 68       |***********                             |
           512 -> 1023       : 32       |*****                                   |
          1024 -> 2047       : 14       |**                                      |
          2048 -> 4095       : 27       |****                                    |
          4096 -> 8191       : 11       |*                                       |
          8192 -> 16383      : 2        |                                        |
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.operators import F, Tumbling, filter, log2_histogram
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.runqueue import run_queue_waits


def pipeline(
    interval: Positive | None = None,
    count: Positive | None = None,
    *,
    milliseconds: Annotated[bool, Option("-m")] = False,
    tid: Annotated[Positive | None, Option("-p")] = None,
) -> Pipeline:
    """Run queue latency as a log2 histogram, as bcc's runqlat.

    Args:
        interval: seconds per histogram (default: one histogram, on Ctrl-C)
        count: how many histograms, then stop (default: until Ctrl-C)
        milliseconds: histogram in milliseconds, not microseconds
        tid: only this thread (the kernel's pid: a thread ID)
    """
    unit, divisor = ("msecs", 1_000_000) if milliseconds else ("usecs", 1000)
    waits = run_queue_waits()
    flow = waits | filter(F.tid == tid) if tid else waits
    return (
        flow
        | log2_histogram(
            "latency_ns",
            unit=unit,
            divisor=divisor,
            every=Tumbling(interval) if interval else None,
            limit=count,
        )
        | ConsoleSink(header="Tracing run queue latency... Hit Ctrl-C to end.")
    )
