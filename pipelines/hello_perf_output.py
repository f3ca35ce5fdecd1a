"""Lesson 7, hello_perf_output: new processes through the perf buffer.

The tutorial's BPF_PERF_OUTPUT lesson: lesson 3's sched:sched_process_fork
events, sent through the perf buffer explicitly (other pipelines use the
ring buffer where the kernel has one). Time is seconds since the first event.

    $ flowtrace run pipelines/hello_perf_output.py     # sh -c true; ls
    TIME(s)            COMM             PID    MESSAGE
    0.000000000        run.sh           27468  Hello, perf_output!
    0.001656233        run.sh           27468  Hello, perf_output!
    0.303096507        run.sh           27468  Hello, perf_output!
    0.305116868        bash             27506  Hello, perf_output!
"""

from flowtrace import tracepoint
from flowtrace.sinks.console import Column, ConsoleSink, RelativeSeconds

pipeline = tracepoint("sched:sched_process_fork", transport="perf") | ConsoleSink(
    [
        Column("TIME(s)", RelativeSeconds("ts"), 18, ".9f"),
        Column("COMM", lambda e: e.comm, 16),
        Column("PID", lambda e: e.pid, 6),
        Column("MESSAGE", lambda e: "Hello, perf_output!"),
    ]
)
