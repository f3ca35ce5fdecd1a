"""Lesson 19, tcp_retransmits: each TCP retransmission, with the connection's state.

bcc's tcpretrans, from the tcp:tcp_retransmit_skb tracepoint (IPv4 and
IPv6): a lost SYN is sent again in state SYN_SENT, lost data in
ESTABLISHED. PID is the task running when it happened, usually 0 (a
timer). T is R for a retransmission.

    $ flowtrace run pipelines/tcp_retransmits.py    # first SYN and 2 messages dropped once
    Tracing retransmits ... Hit Ctrl-C to end
    TIME     PID     IP LADDR:LPORT          T> RADDR:RPORT          STATE
    20:32:06 21146   4  10.200.0.1:57212     R> 10.200.0.2:8080      SYN_SENT
    20:32:07 21147   4  10.200.0.1:57212     R> 10.200.0.2:8080      ESTABLISHED
    20:32:07 21150   4  10.200.0.1:57212     R> 10.200.0.2:8080      ESTABLISHED
    20:32:09 21146   6  fd00::1:47090        R> fd00::2:8080         SYN_SENT
    20:32:09 21146   6  fd00::1:47090        R> fd00::2:8080         ESTABLISHED
    20:32:09 21146   6  fd00::1:47090        R> fd00::2:8080         ESTABLISHED
"""

import time

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.tcp import TcpRetransmit, tcp_retransmits

BOOT = time.time() - time.monotonic()  # event times are CLOCK_MONOTONIC


def clock(e: TcpRetransmit) -> str:
    return time.strftime("%H:%M:%S", time.localtime(BOOT + e.ts / 1e9))


columns: list[Column[TcpRetransmit]] = [
    Column("TIME", clock, 8),
    Column("PID", lambda e: e.pid, 7),
    Column("IP", lambda e: e.ip, 2),
    Column("LADDR:LPORT", lambda e: f"{e.laddr}:{e.lport}", 20),
    Column("T>", lambda e: "R>", 2),
    Column("RADDR:RPORT", lambda e: f"{e.raddr}:{e.rport}", 20),
    Column("STATE", lambda e: e.state),
]

pipeline = tcp_retransmits() | ConsoleSink(
    columns, header="Tracing retransmits ... Hit Ctrl-C to end"
)
