"""tcpretrans: each TCP retransmission, with the connection's state
(bcc's tools/tcpretrans).

    flowtrace run pipelines/tools/tcpretrans.py [-c]

Lesson 19, from tcp:tcp_retransmit_skb; -c counts retransmits per
connection instead, printed on Ctrl-C, as bcc's -c does.

    $ flowtrace run pipelines/tools/tcpretrans.py -c     # SYN and data dropped once each
    Tracing retransmits ... Hit Ctrl-C to end

    LADDR:LPORT               RADDR:RPORT               RETRANSMITS
    [fd00::1]#58222      <-> [fd00::2]#8080                2
    [10.200.0.1]#52496   <-> [10.200.0.2]#8080             3
"""

import time
from typing import Annotated

from flowtrace import Pipeline
from flowtrace.operators import count as counted_by
from flowtrace.parameters import Option
from flowtrace.records import CountRow
from flowtrace.sinks.console import Column, ConsoleSink, TableStyle
from flowtrace.sources.tcp import TcpRetransmit, tcp_retransmits

BOOT = time.time() - time.monotonic()  # event times are CLOCK_MONOTONIC
HEADER = "Tracing retransmits ... Hit Ctrl-C to end"

columns: list[Column[TcpRetransmit]] = [
    Column("TIME", lambda e: time.strftime("%H:%M:%S", time.localtime(BOOT + e.ts / 1e9)), 8),
    Column("PID", lambda e: e.pid, 7),
    Column("IP", lambda e: e.ip, 2),
    Column("LADDR:LPORT", lambda e: f"{e.laddr}:{e.lport}", 20),
    Column("T>", lambda e: "R>", 2),
    Column("RADDR:RPORT", lambda e: f"{e.raddr}:{e.rport}", 20),
    Column("STATE", lambda e: e.state),
]


def connection(e: TcpRetransmit) -> tuple[str, str]:
    return f"[{e.laddr}]#{e.lport}", f"[{e.raddr}]#{e.rport}"


def counted(row: CountRow) -> str:
    local, remote = row.key["connection"]
    return f"{local:<20} <-> {remote:<20} {row.count:10d}"


def pipeline(*, count: Annotated[bool, Option("-c")] = False) -> Pipeline:
    """Each TCP retransmission, as bcc's tcpretrans.

    Args:
        count: count retransmits per connection instead, printed on Ctrl-C
    """
    if not count:
        return tcp_retransmits() | ConsoleSink(columns, header=HEADER)
    title = f"\n{'LADDR:LPORT':<25} {'RADDR:RPORT':<25} {'RETRANSMITS':<10}"
    table = TableStyle(line=counted, title=title, ascending=True)
    return tcp_retransmits() | counted_by(connection) | ConsoleSink(header=HEADER, table=table)
