"""Lesson 18, tcpconnect_accept: TCP connections opened, actively and passively.

bcc's tcpconnect and tcpaccept in one, from sock:inet_sock_set_state
(IPv4 and IPv6): T is C for a connect (SYN_SENT -> ESTABLISHED, the
process that called connect()) and A for an accept (SYN_RECV ->
ESTABLISHED, the process that called listen() on the port while tracing;
accept() itself passes no tracepoint). Reported when the handshake
completes, so refused connects are not shown.

    $ flowtrace run pipelines/tcpconnect_accept.py     # 2 connections over IPv4, 2 over IPv6
    T PID    COMM         IP LADDR            LPORT RADDR            RPORT
    C 9759   client       4  10.200.0.1       52510 10.200.0.2       8080
    A 9758   server       4  10.200.0.2       8080  10.200.0.1       52510
    C 9759   client       4  10.200.0.1       52522 10.200.0.2       8080
    A 9758   server       4  10.200.0.2       8080  10.200.0.1       52522
    C 9762   client       6  fd00::1          34280 fd00::2          8080
    A 9761   server       6  fd00::2          8080  fd00::1          34280
    C 9762   client       6  fd00::1          34288 fd00::2          8080
    A 9761   server       6  fd00::2          8080  fd00::1          34288
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.tcp import TcpOpen, tcp_opens

columns: list[Column[TcpOpen]] = [
    Column("T", lambda e: "A" if e.direction == "accept" else "C", 1),
    Column("PID", lambda e: e.pid, 6),
    Column("COMM", lambda e: e.comm, 12),
    Column("IP", lambda e: e.ip, 2),
    Column("LADDR", lambda e: e.laddr, 16),
    Column("LPORT", lambda e: e.lport, 5),
    Column("RADDR", lambda e: e.raddr, 16),
    Column("RPORT", lambda e: e.rport),
]

pipeline = tcp_opens() | ConsoleSink(columns)
