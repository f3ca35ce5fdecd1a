"""Lesson 10, disklatency: a log2 histogram of disk I/O latency, on Ctrl-C.

The tutorial's exercise: disksnoop's in-kernel timing (lesson 6) feeding
bitehist's histogram (lesson 9), in microseconds.

    $ flowtrace run pipelines/disklatency.py
    Tracing... Hit Ctrl-C to end.
    ^C
         usecs               : count     distribution
             0 -> 1          : 0        |                                        |
             2 -> 3          : 0        |                                        |
             4 -> 7          : 0        |                                        |
             8 -> 15         : 0        |                                        |
            16 -> 31         : 0        |                                        |
            32 -> 63         : 3        |******************************          |
            64 -> 127        : 4        |****************************************|
           128 -> 255        : 4        |****************************************|
"""

from flowtrace.operators import log2_histogram
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.disk import disk_requests

pipeline = (
    disk_requests()
    | log2_histogram("lat_ns", unit="usecs", divisor=1000)
    | ConsoleSink(header="Tracing... Hit Ctrl-C to end.")
)
