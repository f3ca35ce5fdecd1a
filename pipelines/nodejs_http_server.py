"""Lesson 15, nodejs_http_server: each HTTP request of a Node.js server.

    flowtrace run pipelines/nodejs_http_server.py PID

The node:http__server__request USDT probe of process PID, whose sixth
argument is the request path; any process exposing that probe works (here
a small C program with <sys/sdt.h>, since Debian's Node.js has no probes).

    $ flowtrace run pipelines/nodejs_http_server.py 26867
    TIME(s)            COMM             PID    ARGS
    2705.299004877     node             26867  path:/index.html
    2705.299021592     node             26867  path:/images/welcome.png
    2705.299022654     node             26867  path:/images/favicon.png
"""

from flowtrace import Arg, Pipeline, usdt
from flowtrace.errors import AttachError, PipelineFileError
from flowtrace.ktypes import Char
from flowtrace.sinks.console import Column, ConsoleSink


def _positive(text: str) -> bool:
    """Whether ``text`` is a positive integer in ASCII digits ("²" is a digit, not a number)."""
    return text.isascii() and text.isdecimal() and int(text) > 0


def pipeline(args: list[str]) -> Pipeline:
    if len(args) != 1 or not _positive(args[0]):
        raise PipelineFileError(
            f"nodejs_http_server.py takes the PID of the server process, got {' '.join(args)!r}:"
            " run flowtrace run pipelines/nodejs_http_server.py PID"
        )
    source = usdt(int(args[0]), "node:http__server__request", args={"path": Arg(6, Char(128))})
    try:
        source.plan()
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
