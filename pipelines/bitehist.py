"""Lesson 9, bitehist: a log2 histogram of disk I/O sizes, printed on Ctrl-C.

Each issued block request's size (block:block_rq_issue) in kbytes goes into bcc's log2 buckets.

    $ flowtrace run pipelines/bitehist.py      # dd bs=128k count=4 oflag=direct, ...
    Tracing... Hit Ctrl-C to end.
    ^C
         kbytes              : count     distribution
             0 -> 1          : 0        |                                        |
             2 -> 3          : 0        |                                        |
             4 -> 7          : 4        |****************************************|
             8 -> 15         : 2        |********************                    |
            16 -> 31         : 0        |                                        |
            32 -> 63         : 0        |                                        |
            64 -> 127        : 0        |                                        |
           128 -> 255        : 4        |****************************************|
           256 -> 511        : 0        |                                        |
           512 -> 1023       : 1        |**********                              |
"""

from flowtrace import tracepoint
from flowtrace.operators import log2_histogram
from flowtrace.sinks.console import ConsoleSink

pipeline = (
    tracepoint("block:block_rq_issue")
    | log2_histogram("bytes", unit="kbytes", divisor=1024)
    | ConsoleSink(header="Tracing... Hit Ctrl-C to end.")
)
