"""Lesson 15, nodejs_http_server: each HTTP request of a Node.js server.

    flowtrace run nodejs_http_server PID

The node:http__server__request USDT probe of process PID, whose sixth
argument is the request path; any process exposing that probe works (here
a small C program with <sys/sdt.h>, since Debian's Node.js has no probes).

    $ flowtrace run nodejs_http_server 26867
    TIME(s)            COMM             PID    ARGS
    2705.299004877     node             26867  path:/index.html
    2705.299021592     node             26867  path:/images/welcome.png
    2705.299022654     node             26867  path:/images/favicon.png
"""

from flowtrace import Arg, Pipeline, usdt
from flowtrace.errors import AttachError, KernelUnreadable, PipelineFileError
from flowtrace.ktypes import Char
from flowtrace.parameters import Positive
from flowtrace.sinks.console import Column, ConsoleSink


def pipeline(pid: Positive) -> Pipeline:
    """Each HTTP request a Node.js server process handles, with its path.

    Args:
        pid: the process ID of the server (it must have the node USDT probes)
    """
    source = usdt(pid, "node:http__server__request", args={"path": Arg(6, Char(128))})
    try:
        source.plan()
    except KernelUnreadable:
        pass  # not root: a replay needs no kernel, and a run says why it cannot attach
    except AttachError as exc:
        raise PipelineFileError(
            f"nodejs_http_server.py: {exc}: give the PID of a process with that probe"
        ) from None
    return source | ConsoleSink(
        [
            Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".9f"),
            Column("COMM", lambda e: e.comm, 16),
            Column("PID", lambda e: e.pid, 6),
            Column("ARGS", lambda e: f"path:{e.path}"),
        ]
    )
