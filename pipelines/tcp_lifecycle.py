"""Lesson 17, tcp_lifecycle: one line per TCP connection, when it closes.

bcc's tcplife, from the sock:inet_sock_set_state tracepoint (IPv4 and
IPv6): the kernel notes when each connection is established and which
process connects or closes it, counts the bytes processes send and receive
on it (sock:sock_send_length, sock:sock_recv_length) and reports it when
its socket is destroyed (tcp:tcp_destroy_sock). TX_KB/RX_KB: kilobytes sent
and received; MS: milliseconds from established to closed.

    $ flowtrace run pipelines/tcp_lifecycle.py     # 2 connections over IPv4, 2 over IPv6
    PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS
    9492  server     10.200.0.2      8080  10.200.0.1      54074    68     2 2.15
    9493  client     10.200.0.1      54074 10.200.0.2      8080      2    68 2.16
    9492  server     10.200.0.2      8080  10.200.0.1      54090    68     2 0.16
    9493  client     10.200.0.1      54090 10.200.0.2      8080      2    68 0.16
    9497  server     fd00::2         8080  fd00::1         49744    68     2 0.28
    9498  client     fd00::1         49744 fd00::2         8080      2    68 0.28
    9497  server     fd00::2         8080  fd00::1         49758    68     2 0.18
    9498  client     fd00::1         49758 fd00::2         8080      2    68 0.19
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.tcp import session_columns, tcp_sessions

pipeline = tcp_sessions() | ConsoleSink(session_columns)
