"""opensnoop: each file opened, with the result (bcc's tools/opensnoop).

    flowtrace run pipelines/tools/opensnoop.py [-x] [-p PID]

From the openat syscall tracepoints (glibc's open() and fopen() call
openat; the rare openat2 is not traced), entry and exit paired by thread in
user space; bcc's original uses kprobes or fentry, which this kernel
lacks. FD is -1 and ERR the errno for a failed open; -x shows failed
opens only, -p one process.

    $ flowtrace run pipelines/tools/opensnoop.py -x     # cat /etc/hostname /nonexistent-flowtrace
    PID    COMM               FD ERR PATH
    24146  cat                -1   2
    24146  cat                -1   2 /usr/lib/locale/C.UTF-8/LC_IDENTIFICATION
    [...]
    24146  cat                -1   2 /usr/lib/locale/C.UTF-8/LC_CTYPE
    24146  cat                -1   2 /nonexistent-flowtrace
    24146  cat                -1   2 /usr/share/locale/C.UTF-8/LC_MESSAGES/libc.mo
    [...]
"""

from typing import Annotated

from flowtrace import Event, Pipeline, tracepoints
from flowtrace.ktypes import Char, s64, task_comm, task_pid, task_tid
from flowtrace.operators import filter, join
from flowtrace.parameters import Option, Positive
from flowtrace.records import JoinPair
from flowtrace.sinks.console import Column, ConsoleSink


class OpenEntry(Event, frozen=True):
    pid: task_pid
    tid: task_tid
    comm: task_comm
    filename: Annotated[str, Char(256)]


class OpenExit(Event, frozen=True):
    tid: task_tid
    ret: s64


Open = JoinPair[OpenEntry, OpenExit]
columns: list[Column[Open]] = [
    Column("PID", lambda p: p.start.pid, 6),
    Column("COMM", lambda p: p.start.comm, 16),
    Column("  FD", lambda p: max(p.complete.ret, -1), 4, ">4"),
    Column("ERR", lambda p: max(-p.complete.ret, 0), 3, ">3"),
    Column("PATH", lambda p: p.start.filename),
]


def pipeline(
    *,
    failed: Annotated[bool, Option("-x")] = False,
    pid: Annotated[Positive | None, Option("-p")] = None,
) -> Pipeline:
    """Each file opened, with the result, as bcc's opensnoop.

    Args:
        failed: only failed opens
        pid: only this process
    """
    opens = tracepoints(
        ("syscalls:sys_enter_openat", OpenEntry),
        ("syscalls:sys_exit_openat", OpenExit),
        source_name="opens",
    ) | join(OpenEntry, OpenExit, key="tid", time_field=None, emit_incomplete=False)
    if pid is not None:
        opens = opens | filter(lambda p: p.start.pid == pid)
    if failed:
        opens = opens | filter(lambda p: p.complete.ret < 0)
    return opens | ConsoleSink(columns)
