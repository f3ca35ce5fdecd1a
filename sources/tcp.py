"""TCP connections from the kernel's stable TCP tracepoints, no kprobes.

* :func:`tcp_sessions`: one event per closed connection (bcc's tcplife),
  from ``sock:inet_sock_set_state``, with bytes from
  ``sock:sock_send_length``/``sock:sock_recv_length`` where the kernel has
  them (Linux 6.3+).
* :func:`tcp_opens`: one event per connection opened, actively (connect)
  or passively (accept), as bcc's tcpconnect and tcpaccept report them.
* :func:`tcp_retransmits`: one event per retransmitted segment, with the
  connection's TCP state (``tcp:tcp_retransmit_skb``, bcc's tcpretrans).

State between tracepoint hits lives in BPF hashes keyed by the socket's
address, bounded to :data:`MAX_CONNECTIONS` connections; a connection that
finds them full is counted as lost (``stats.lost``). Addresses are finished
in user space (:mod:`flowtrace.sources.inet`), so events carry them as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from flowtrace.converted_output import Converted
from flowtrace.events import Event, layout_of
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import Char, comm, ktime_ns, s64, task_pid, u8, u16, u32, u64
from flowtrace.outputs import buffer_output
from flowtrace.probes import Param, Probe, Scheme, Tracepoint
from flowtrace.sinks.console import Column

from .inet import ADDRESS_HALVES, address, ip_version, tcp_state

__all__ = [
    "MAX_CONNECTIONS",
    "TcpOpen",
    "TcpRetransmit",
    "TcpSession",
    "session_columns",
    "tcp_opens",
    "tcp_retransmits",
    "tcp_sessions",
]

MAX_CONNECTIONS = 10240
"""Connections the kernel side follows at once (bcc's tools use the same bound)."""

Address = Annotated[str, Char(40)]  # an IPv6 address in text is at most 39 characters

_STATES_C = """\
#define FT_TCP_ESTABLISHED 1
#define FT_TCP_SYN_SENT 2
#define FT_TCP_SYN_RECV 3
#define FT_TCP_FIN_WAIT1 4
#define FT_TCP_CLOSE 7
#define FT_TCP_LAST_ACK 9
#define FT_TCP_LISTEN 10
#define FT_IPPROTO_TCP 6
#define FT_MSG_PEEK 2

struct ft_task {
    u32 pid;
    char comm[16];
};

static __always_inline void ft_current_task(struct ft_task *task) {
    task->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&task->comm, sizeof(task->comm));
}
"""

_ADDRESS_PARAMS = (
    Param("laddr0"),
    Param("laddr1"),
    Param("raddr0"),
    Param("raddr1"),
)
_ADDRESS_FIELDS = {
    "laddr0": "ft_address_half(args->saddr_v6, 0)",
    "laddr1": "ft_address_half(args->saddr_v6, 1)",
    "raddr0": "ft_address_half(args->daddr_v6, 0)",
    "raddr1": "ft_address_half(args->daddr_v6, 1)",
}
_STATE_PARAMS = (
    Param("sk"),
    Param("oldstate", "int"),
    Param("newstate", "int"),
    Param("sport", "u16"),
    Param("dport", "u16"),
    Param("family", "u16"),
    Param("protocol", "u16"),
    *_ADDRESS_PARAMS,
)
_COPY_ADDRESSES = """\
e.family = family;
e.lport = sport;
e.rport = dport;
e.laddr0 = laddr0;
e.laddr1 = laddr1;
e.raddr0 = raddr0;
e.raddr1 = raddr1;"""


def _state_change(**fields: str) -> Tracepoint:
    """``sock:inet_sock_set_state`` with the socket as a number, addresses
    in halves, and ``fields`` for further parameters."""
    return Tracepoint(
        "sock",
        "inet_sock_set_state",
        fields={"sk": "(u64)args->skaddr", **_ADDRESS_FIELDS, **fields},
    )


class _Connection(Event, frozen=True):
    """Fields every record of this module starts with."""

    ts: ktime_ns
    family: u16
    lport: u16
    rport: u16
    laddr0: u64
    laddr1: u64
    raddr0: u64
    raddr1: u64


def _endpoints(r: Any) -> tuple[int, str, int, str, int]:
    """A connection record's ``ip, laddr, lport, raddr, rport``, addresses as text."""
    local = address(r.family, r.laddr0, r.laddr1)
    remote = address(r.family, r.raddr0, r.raddr1)
    return ip_version(r.family), local, r.lport, remote, r.rport


def _source(
    record: type[Event],
    event: type[Any],
    convert: Any,
    probes: Sequence[Probe],
    prelude: str,
    name: str,
    transport: str,
) -> KernelSource[Any]:
    output = Converted(buffer_output(transport), record, convert)
    return KernelSource(
        event, *probes, prelude=ADDRESS_HALVES + _STATES_C + prelude, name=name, output=output
    )


# -- tcplife: one event per closed connection -----------------------------------


class TcpSession(Event, frozen=True):
    """A TCP connection that closed (bcc's tcplife row).

    ``pid``/``comm``: the last process seen opening or closing it
    (connect, close or shutdown; the current task when none was seen).
    ``tx_bytes``/``rx_bytes``: what processes sent and received on it
    (-1 where the kernel has no send/receive tracepoints). ``duration_ns``:
    from its last state change before closing began (established, for a
    connection that got there) to its close, as tcplife measures.
    """

    ts: ktime_ns
    pid: u32
    comm: comm
    ip: u8
    laddr: Address
    lport: u16
    raddr: Address
    rport: u16
    tx_bytes: s64
    rx_bytes: s64
    duration_ns: u64


class TcpSessionRecord(_Connection, frozen=True):
    pid: u32
    comm: comm
    tx_bytes: s64
    rx_bytes: s64
    duration_ns: u64


def _sessions(batch: list[TcpSessionRecord]) -> list[TcpSession]:
    return [
        TcpSession(r.ts, r.pid, r.comm, *_endpoints(r), r.tx_bytes, r.rx_bytes, r.duration_ns)
        for r in batch
    ]


_SESSION_C = f"""\
struct ft_life {{
    u64 start;  // its last state change before closing began
    u64 closed;  // when it reached CLOSE (0: not yet)
}};

struct ft_traffic {{
    u64 tx;
    u64 rx;
}};

BPF_HASH(ft_life, u64, struct ft_life, {MAX_CONNECTIONS});  // socket -> its life so far
BPF_HASH(ft_owner, u64, struct ft_task, {MAX_CONNECTIONS});  // socket -> who opened/closed it
BPF_HASH(ft_traffic, u64, struct ft_traffic, {MAX_CONNECTIONS});  // socket -> bytes moved

// Fills `e` with the session of socket `sk`, ending now, and forgets the
// socket; 0 when it was not followed (opened before tracing began).
static __always_inline int ft_session_end(struct {layout_of(TcpSessionRecord).c_name} *e,
                                          u64 sk, int counted) {{
    struct ft_life *life = ft_life.lookup(&sk);
    if (!life) {{
        ft_owner.delete(&sk);
        ft_traffic.delete(&sk);
        return 0;
    }}
    e->duration_ns = (life->closed ? life->closed : bpf_ktime_get_ns()) - life->start;
    struct ft_task *who = ft_owner.lookup(&sk);
    if (who) {{
        e->pid = who->pid;
        __builtin_memcpy(&e->comm, who->comm, sizeof(e->comm));
    }} else {{
        e->pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
    }}
    e->tx_bytes = e->rx_bytes = -1;
    struct ft_traffic *traffic = ft_traffic.lookup(&sk);
    if (counted) {{
        e->tx_bytes = traffic ? traffic->tx : 0;
        e->rx_bytes = traffic ? traffic->rx : 0;
    }}
    ft_life.delete(&sk);
    ft_owner.delete(&sk);
    ft_traffic.delete(&sk);
    return 1;
}}
"""

_SESSION_STATE_BODY = """\
if (protocol != FT_IPPROTO_TCP)
    return 0;
if (newstate < FT_TCP_FIN_WAIT1) {
    struct ft_life life = {.start = bpf_ktime_get_ns()};
    if (ft_life.update(&sk, &life) != 0) {
        ft_count_lost();  // no room to follow this connection
        return 0;
    }
}
struct ft_life *life = ft_life.lookup(&sk);
if (!life)
    return 0;
if (newstate == FT_TCP_SYN_SENT || newstate == FT_TCP_FIN_WAIT1 || newstate == FT_TCP_LAST_ACK) {
    struct ft_task who = {};
    ft_current_task(&who);
    ft_owner.update(&sk, &who);
}
if (newstate != FT_TCP_CLOSE)
    return 0;
life->closed = bpf_ktime_get_ns();
if (counted)
    return 0;  // reported when the socket is destroyed, once every byte was read
if (!ft_session_end(&e, sk, counted))
    return 0;
""" + _COPY_ADDRESSES

_SESSION_DESTROY_BODY = """\
if (!ft_session_end(&e, sk, 1))
    return 0;
""" + _COPY_ADDRESSES


def _traffic_body(direction: str, skip: str) -> str:
    return f"""\
if (protocol != FT_IPPROTO_TCP || ret <= 0{skip} || !ft_life.lookup(&sk))
    return 0;
struct ft_traffic none = {{}};
struct ft_traffic *traffic = ft_traffic.lookup_or_try_init(&sk, &none);
if (traffic)
    __sync_fetch_and_add(&traffic->{direction}, ret);"""


def _traffic_probe(what: str, event: str, direction: str, skip: str = "") -> Probe:
    return Probe(
        what,
        Scheme("with bytes", Tracepoint("sock", event, fields={"sk": "(u64)args->sk"})),
        body=_traffic_body(direction, skip),
        params=[Param("sk"), Param("protocol", "u16"), Param("ret", "int"), Param("flags", "int")],
        emits=False,
    )


def tcp_sessions(*, transport: str = "auto") -> KernelSource[TcpSession]:
    """One :class:`TcpSession` per TCP connection (IPv4 and IPv6) opened and
    closed while tracing.

    Where the kernel has ``sock:sock_send_length``/``sock_recv_length`` and
    ``tcp:tcp_destroy_sock`` (the "with bytes" scheme), bytes are counted
    and a session is reported when its socket is destroyed: after its
    process closed it, so data read after the connection closed counts too.
    Else (the "without bytes" scheme) it is reported when it reaches CLOSE,
    bytes as -1.
    """
    state = Probe(
        "TCP state changes",
        Scheme("with bytes", _state_change(counted="1")),
        Scheme("without bytes", _state_change(counted="0")),
        body=_SESSION_STATE_BODY,
        params=[*_STATE_PARAMS, Param("counted", "int")],
    )
    destroyed = Probe(
        "TCP sockets destroyed",
        Scheme(
            "with bytes",
            Tracepoint(
                "tcp",
                "tcp_destroy_sock",
                fields={"sk": "(u64)args->skaddr", **_ADDRESS_FIELDS},
            ),
        ),
        body=_SESSION_DESTROY_BODY,
        params=[
            Param("sk"),
            Param("sport", "u16"),
            Param("dport", "u16"),
            Param("family", "u16"),
            *_ADDRESS_PARAMS,
        ],
    )
    probes = [
        state,
        destroyed,
        _traffic_probe("bytes sent on sockets", "sock_send_length", "tx"),
        _traffic_probe(
            "bytes received on sockets", "sock_recv_length", "rx", " || (flags & FT_MSG_PEEK)"
        ),
    ]
    return _source(
        TcpSessionRecord, TcpSession, _sessions, probes, _SESSION_C, "tcp_sessions", transport
    )


# -- tcpconnect / tcpaccept: connections opened ---------------------------------


class TcpOpen(Event, frozen=True):
    """A TCP connection opened: ``direction`` is ``connect`` (active: this host
    sent the SYN) or ``accept`` (passive: a listener took it), reported when
    the handshake completes. ``pid``/``comm``: the process that called
    connect(), or for an accept the process that called listen() on the
    local port while tracing (pid 0, comm ``""`` when that was before).
    """

    ts: ktime_ns
    direction: Annotated[str, Char(8)]
    pid: u32
    comm: comm
    ip: u8
    laddr: Address
    lport: u16
    raddr: Address
    rport: u16


class TcpOpenRecord(_Connection, frozen=True):
    passive: u8
    pid: u32
    comm: comm


def _opens(batch: list[TcpOpenRecord]) -> list[TcpOpen]:
    return [
        TcpOpen(r.ts, "accept" if r.passive else "connect", r.pid, r.comm, *_endpoints(r))
        for r in batch
    ]


_OPEN_MAPS = f"""\
// socket -> who called connect(); local port -> who called listen()
BPF_HASH(ft_connecting, u64, struct ft_task, {MAX_CONNECTIONS});
BPF_HASH(ft_listeners, u16, struct ft_task, {MAX_CONNECTIONS});
"""

_OPEN_BODY = """\
if (protocol != FT_IPPROTO_TCP)
    return 0;
if (newstate == FT_TCP_LISTEN || newstate == FT_TCP_SYN_SENT) {
    struct ft_task who = {};
    ft_current_task(&who);
    int full = newstate == FT_TCP_LISTEN ? ft_listeners.update(&sport, &who)
                                         : ft_connecting.update(&sk, &who);
    if (full)
        ft_count_lost();
    return 0;
}
if (oldstate == FT_TCP_LISTEN && newstate == FT_TCP_CLOSE) {
    ft_listeners.delete(&sport);
    return 0;
}
struct ft_task *who = 0;
if (oldstate == FT_TCP_SYN_SENT) {
    who = ft_connecting.lookup(&sk);
    if (!who)
        return 0;  // connect() called before tracing began
    if (newstate != FT_TCP_ESTABLISHED) {
        ft_connecting.delete(&sk);  // refused or timed out: no connection opened
        return 0;
    }
} else if (oldstate == FT_TCP_SYN_RECV && newstate == FT_TCP_ESTABLISHED) {
    e.passive = 1;
    who = ft_listeners.lookup(&sport);
} else {
    return 0;
}
if (who) {
    e.pid = who->pid;
    __builtin_memcpy(&e.comm, who->comm, sizeof(e.comm));
}
if (!e.passive)
    ft_connecting.delete(&sk);
""" + _COPY_ADDRESSES


def tcp_opens(*, transport: str = "auto") -> KernelSource[TcpOpen]:
    """One :class:`TcpOpen` per TCP connection (IPv4 and IPv6) whose
    handshake completes while tracing: connects and accepts."""
    probe = Probe(
        "TCP state changes", _state_change(), body=_OPEN_BODY, params=list(_STATE_PARAMS)
    )
    return _source(TcpOpenRecord, TcpOpen, _opens, [probe], _OPEN_MAPS, "tcp_opens", transport)


# -- tcpretrans: retransmitted segments -----------------------------------------


class TcpRetransmit(Event, frozen=True):
    """A TCP segment sent again, with its connection's ``state`` when it
    was (``ESTABLISHED``, ``SYN_SENT``... as bcc's tcpretrans names them).
    ``pid``: the current task then, usually 0 (a timer) as in tcpretrans."""

    ts: ktime_ns
    pid: u32
    ip: u8
    laddr: Address
    lport: u16
    raddr: Address
    rport: u16
    state: Annotated[str, Char(16)]


class TcpRetransmitRecord(_Connection, frozen=True):
    pid: task_pid
    state: u8


def _retransmits(batch: list[TcpRetransmitRecord]) -> list[TcpRetransmit]:
    return [TcpRetransmit(r.ts, r.pid, *_endpoints(r), tcp_state(r.state)) for r in batch]


def tcp_retransmits(*, transport: str = "auto") -> KernelSource[TcpRetransmit]:
    """One :class:`TcpRetransmit` per retransmitted TCP segment (a lost
    SYN, a timeout, a tail loss probe, a fast retransmit alike)."""
    probe = Probe(
        "TCP retransmits",
        Tracepoint("tcp", "tcp_retransmit_skb", fields=_ADDRESS_FIELDS),
        body="e.state = state;\n" + _COPY_ADDRESSES,
        params=[
            Param("state", "int"),
            Param("sport", "u16"),
            Param("dport", "u16"),
            Param("family", "u16"),
            *_ADDRESS_PARAMS,
        ],
    )
    return _source(
        TcpRetransmitRecord, TcpRetransmit, _retransmits, [probe], "", "tcp_retransmits", transport
    )


def _kbytes(count: int) -> int | str:
    return count // 1024 if count >= 0 else "-"  # -1: not counted on this kernel


session_columns: list[Column[TcpSession]] = [
    Column("PID", lambda e: e.pid, 5),
    Column("COMM", lambda e: e.comm[:10], 10),
    Column("LADDR", lambda e: e.laddr, 15),
    Column("LPORT", lambda e: e.lport, 5),
    Column("RADDR", lambda e: e.raddr, 15),
    Column("RPORT", lambda e: e.rport, 5),
    Column("TX_KB", lambda e: _kbytes(e.tx_bytes), 5, ">5"),
    Column("RX_KB", lambda e: _kbytes(e.rx_bytes), 5, ">5"),
    Column("MS", lambda e: e.duration_ns / 1e6, spec=".2f"),
]
"""bcc tcplife's table of sessions: kilobytes sent and received ("-" where
the kernel cannot count them), milliseconds from established to closed."""
