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

from flowtrace import Pipeline
from flowtrace.arguments import Arguments, positive_int
from flowtrace.operators import F, Tumbling, filter, log2_histogram
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.runqueue import run_queue_waits


def pipeline(args: list[str]) -> Pipeline:
    options = Arguments("pipelines/tools/runqlat.py", "[-m] [-p TID] [interval [count]]")
    options.add_argument("-m", "--milliseconds", action="store_true")
    options.add_argument("-p", "--tid", type=positive_int)
    options.add_argument("interval", type=positive_int, nargs="?")
    options.add_argument("count", type=positive_int, nargs="?")
    given = options.parse(args)
    unit, divisor = ("msecs", 1_000_000) if given.milliseconds else ("usecs", 1000)
    waits = run_queue_waits()
    flow = waits | filter(F.tid == given.tid) if given.tid else waits
    return (
        flow
        | log2_histogram(
            "latency_ns",
            unit=unit,
            divisor=divisor,
            every=Tumbling(given.interval) if given.interval else None,
            limit=given.count,
        )
        | ConsoleSink(header="Tracing run queue latency... Hit Ctrl-C to end.")
    )
