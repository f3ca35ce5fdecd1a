"""tcplife: one line per TCP connection, when it closes (bcc's tools/tcplife).

    flowtrace run pipelines/tools/tcplife.py [-p PID] [-L LPORT] [-D RPORT]

Lesson 17 with bcc's filters: -p one process, -L a local port, -D a remote
port. Bytes are what processes sent and received on the connection
(bcc's original reads struct tcp_sock, whose offsets it gets from kernel
headers: with headers of another kernel, as here, its byte counts are
wrong).

    $ flowtrace run pipelines/tools/tcplife.py -L 8080     # 2 connections to a server on 8080
    PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS
    24321 server     10.200.0.2      8080  10.200.0.1      52480    68     2 0.42
    24321 server     10.200.0.2      8080  10.200.0.1      52494    68     2 0.21
"""

import operator
from functools import reduce
from typing import Annotated

from flowtrace import Pipeline
from flowtrace.operators import field, filter
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.tcp import session_columns, tcp_sessions

Port = Annotated[int | None, Option(minimum=1, maximum=65535)]


def pipeline(
    *,
    pid: Annotated[Positive | None, Option("-p")] = None,
    localport: Annotated[Port, Option("-L", metavar="LPORT")] = None,
    remoteport: Annotated[Port, Option("-D", metavar="RPORT")] = None,
) -> Pipeline:
    """One line per TCP connection when it closes, as bcc's tcplife.

    Args:
        pid: only this process
        localport: only connections with this local port
        remoteport: only connections with this remote port
    """
    asked = {"pid": pid, "lport": localport, "rport": remoteport}
    wanted = [field(name) == value for name, value in asked.items() if value is not None]
    if not wanted:
        return tcp_sessions() | ConsoleSink(session_columns)
    return tcp_sessions() | filter(reduce(operator.and_, wanted)) | ConsoleSink(session_columns)
