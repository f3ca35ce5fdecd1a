"""execsnoop: each program executed, with its arguments (bcc's tools/execsnoop).

    flowtrace run pipelines/tools/execsnoop.py [-x]

From the execve syscall tracepoints (bcc's original uses a kprobe on the
execve syscall, which this kernel lacks). Up to 8 arguments of 39 bytes are
kept ("..." follows when there were more); -x shows failed execs too.

    $ flowtrace run pipelines/tools/execsnoop.py    # sh -c 'ls; date; /bin/echo ...'
    PCOMM            PID     PPID    RET ARGS
    sh               24134   24129     0 /bin/sh -c ls /etc >/dev/null; date >/dev/null; /b
    ls               24135   24134     0 ls /etc
    date             24136   24134     0 date
    echo             24137   24134     0 /bin/echo one two words
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.operators import F, filter
from flowtrace.parameters import Option
from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.exec import Exec, exec_calls

columns: list[Column[Exec]] = [
    Column("PCOMM", lambda e: e.comm, 16),
    Column("PID", lambda e: e.pid, 7),
    Column("PPID", lambda e: e.ppid or "?", 7),
    Column("RET", lambda e: e.ret, 3, ">3"),
    Column("ARGS", lambda e: e.args),
]


def pipeline(*, fails: Annotated[bool, Option("-x")] = False) -> Pipeline:
    """Each program executed, with its arguments, as bcc's execsnoop.

    Args:
        fails: show failed execs too
    """
    execs = exec_calls() if fails else exec_calls() | filter(F.ret == 0)
    return execs | ConsoleSink(columns)
