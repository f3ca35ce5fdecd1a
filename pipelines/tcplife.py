"""Lesson 17, tcplife: one line per TCP connection, when it closes.

bcc's tcplife, from the sock:inet_sock_set_state tracepoint (IPv4 and
IPv6): the kernel notes when each connection is established and which
process connects or closes it, counts the bytes processes send and receive
on it (sock:sock_send_length, sock:sock_recv_length) and reports it when
its socket is destroyed (tcp:tcp_destroy_sock). TX_KB/RX_KB: kilobytes sent
and received; MS: milliseconds from established to closed.

    $ flowtrace run pipelines/tcplife.py
PLACEHOLDER
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.tcp import TcpSession, tcp_sessions


def kbytes(count: int) -> int | str:
    return count // 1024 if count >= 0 else "-"  # -1: not counted on this kernel


columns: list[Column[TcpSession]] = [
    Column("PID", lambda e: e.pid, 5),
    Column("COMM", lambda e: e.comm[:10], 10),
    Column("LADDR", lambda e: e.laddr, 15),
    Column("LPORT", lambda e: e.lport, 5),
    Column("RADDR", lambda e: e.raddr, 15),
    Column("RPORT", lambda e: e.rport, 5),
    Column("TX_KB", lambda e: kbytes(e.tx_bytes), 5, ">5"),
    Column("RX_KB", lambda e: kbytes(e.rx_bytes), 5, ">5"),
    Column("MS", lambda e: e.duration_ns / 1e6, spec=".2f"),
]

pipeline = tcp_sessions() | ConsoleSink(columns)
