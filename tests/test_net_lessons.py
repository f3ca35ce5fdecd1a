"""The network lessons (17-21) for real, each inside two network namespaces
the test makes (tests/netns.py): a client and a server the test runs, with
known connections, bytes, requests, datagrams and dropped packets, and the
exact events each lesson must report for them."""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from clirun import Running, flowtrace
from kernelrun import collect, through
from netns import Peer, VethPair, first_copies_dropped, veth_pair

from flowtrace import Pipeline
from flowtrace.loader import load_pipeline
from flowtrace.records import CountTable

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]

FAMILIES = ["ipv4", "ipv6"]


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair() as made:
        yield made


@pytest.fixture
def port() -> int:
    """A server port of this test alone (addresses repeat across test runs'
    namespaces; events are told apart by port)."""
    return random.randrange(20000, 30000)


def addresses(pair: VethPair, family: str) -> tuple[str, str]:
    """(client, server) addresses of ``family``."""
    if family == "ipv4":
        return pair.client4, pair.server4
    return pair.client6, pair.server6


def lesson(path: str, args: list[str] | None = None) -> Pipeline:
    return load_pipeline(f"pipelines/{path}", args)


def line(pipeline: Pipeline, item: Any) -> str:
    return str(pipeline.sink.line(item))  # type: ignore[attr-defined]


class Exchange:
    """Starts the server, then the client once the server listens; both
    must end well. ``out``: what the client printed."""

    def __init__(self, server: Peer, client: Peer) -> None:
        self.server, self.client = server, client
        self.out: list[str] = []

    def __call__(self) -> None:
        try:
            self.server.go()
            assert self.server.line() == "listening"
            self.client.go()
            self.out = self.client.finish()
            self.server.finish()
        finally:
            self.client.kill()
            self.server.kill()


# -- lesson 17: tcplife ------------------------------------------------------

CONNECTIONS = 3
SENT = 3000  # bytes each connection's client sends
REPLY = 70000  # bytes the server replies with


@pytest.mark.parametrize("family", FAMILIES)
async def test_tcplife_reports_each_connection_once_from_each_end(
    pair: VethPair, port: int, family: str
) -> None:
    client_ip, server_ip = addresses(pair, family)
    server = pair.peer(pair.server, "server", server_ip, port, CONNECTIONS, REPLY)
    client = pair.peer(pair.client, "client", server_ip, port, CONNECTIONS, SENT)
    run = Exchange(server, client)
    pipeline = lesson("tcp_lifecycle.py")
    events = await collect(pipeline.source, run)
    clients = [tuple(map(int, text.split())) for text in run.out]
    assert [received for _, received in clients] == [REPLY] * CONNECTIONS
    ours = [e for e in events if port in (e.lport, e.rport)]
    ip = 4 if family == "ipv4" else 6
    expected = []
    for lport, _ in clients:
        expected.append((client.pid, "client", ip, client_ip, lport, server_ip, port, SENT, REPLY))
        expected.append((server.pid, "server", ip, server_ip, port, client_ip, lport, REPLY, SENT))
    seen = [
        (e.pid, e.comm, e.ip, e.laddr, e.lport, e.raddr, e.rport, e.tx_bytes, e.rx_bytes)
        for e in ours
    ]
    assert sorted(seen) == sorted(expected)
    assert all(0 < e.duration_ns < 10**10 for e in ours)
    row = next(e for e in ours if e.pid == client.pid)
    fixed = f"{client.pid:<5} client     {client_ip:<15} {row.lport:<5} {server_ip:<15} {port:<5}"
    assert re.fullmatch(re.escape(f"{fixed}     2    68 ") + r"\d+\.\d\d", line(pipeline, row))


# -- lesson 18: tcpconnect / tcpaccept ---------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_tcpconnect_accept_reports_each_connect_and_each_accept(
    pair: VethPair, port: int, family: str
) -> None:
    client_ip, server_ip = addresses(pair, family)
    server = pair.peer(pair.server, "server", server_ip, port, CONNECTIONS, 10)
    client = pair.peer(pair.client, "client", server_ip, port, CONNECTIONS, 10)
    run = Exchange(server, client)
    pipeline = lesson("tcpconnect_accept.py")
    events = await collect(pipeline.source, run)
    lports = [int(text.split()[0]) for text in run.out]
    ours = [e for e in events if port in (e.lport, e.rport)]
    ip = 4 if family == "ipv4" else 6
    expected = []
    for lport in lports:
        expected.append(("connect", client.pid, "client", ip, client_ip, lport, server_ip, port))
        expected.append(("accept", server.pid, "server", ip, server_ip, port, client_ip, lport))
    seen = [
        (e.direction, e.pid, e.comm, e.ip, e.laddr, e.lport, e.raddr, e.rport) for e in ours
    ]
    assert sorted(seen) == sorted(expected)
    accept = next(e for e in ours if e.direction == "accept")
    assert line(pipeline, accept) == (
        f"A {server.pid:<6} server       {ip:<2} {server_ip:<16} {port:<5}"
        f" {client_ip:<16} {accept.rport}"
    )


# -- lesson 19: tcpretrans -----------------------------------------------------

MESSAGES = 3


@pytest.mark.parametrize("family", FAMILIES)
async def test_tcpretrans_reports_the_syn_and_each_data_segment_dropped_once(
    pair: VethPair, port: int, family: str
) -> None:
    client_ip, server_ip = addresses(pair, family)
    server = pair.peer(pair.server, "echo-server", server_ip, port)
    client = pair.peer(pair.client, "messages", server_ip, port, MESSAGES, 100)
    run = Exchange(server, client)
    pipeline = lesson("tcp_retransmits.py")
    with first_copies_dropped(pair, port) as wire:
        events = await collect(pipeline.source, run)
        seen = wire()
    assert (seen.syns_dropped, seen.data_dropped) == (1, MESSAGES), seen
    (lport,) = map(int, run.out)
    ours = [e for e in events if (e.lport, e.rport) == (lport, port)]
    ip = 4 if family == "ipv4" else 6
    everything = [e for e in events if port in (e.lport, e.rport)]
    # the SYN's retransmits first, then the messages'
    states = [(e.ip, e.laddr, e.raddr, e.state) for e in everything]
    syns = states.count((ip, client_ip, server_ip, "SYN_SENT"))
    assert states == [
        *[(ip, client_ip, server_ip, "SYN_SENT")] * syns,
        *[(ip, client_ip, server_ip, "ESTABLISHED")] * (len(states) - syns),
    ], (everything, seen)
    # exactly what the kernel handed to BPF (an independent count): each copy
    # the wire carried again (a late ACK on a loaded machine adds a resend),
    # but for a rare one the kernel sent without running the tracepoint's
    # programs (see first_copies_dropped); two in one test would be a change
    traced = seen.syns_traced + seen.data_traced
    assert (syns, len(states) - syns) == (seen.syns_traced, seen.data_traced), (everything, seen)
    assert seen.syns_traced <= seen.syns_resent and seen.data_traced <= seen.data_resent, seen
    assert traced >= seen.syns_resent + seen.data_resent - 1, seen
    assert everything == ours
    rest = f"{ip}  {f'{client_ip}:{lport}':<20} R> {f'{server_ip}:{port}':<20} {ours[0].state}"
    assert re.fullmatch(r"\d\d:\d\d:\d\d [\d ]{7} " + re.escape(rest), line(pipeline, ours[0]))
    assert pipeline.sink.header == ["Tracing retransmits ... Hit Ctrl-C to end"]  # type: ignore[attr-defined]


# -- lesson 20: http_filter (a socket filter) ----------------------------------

REQUESTS = [
    ("GET", "/index.html"),
    ("POST", "/form"),
    ("GET", "/index.html"),
    ("HEAD", "/x"),
    ("DELETE", "/items/7?force=1"),
    ("GET", "/index.html"),
    ("PUT", "/up"),
]


@pytest.mark.parametrize("family", FAMILIES)
async def test_http_filter_passes_exactly_the_requests_and_counts_them(
    pair: VethPair, port: int, family: str
) -> None:
    client_ip, server_ip = addresses(pair, family)
    server = pair.peer(pair.server, "http-server", server_ip, port, len(REQUESTS))
    client = pair.peer(
        pair.client, "http-client", server_ip, port, *(f"{m}:{p}" for m, p in REQUESTS)
    )
    pipeline = lesson("http_filter.py", [pair.server_if, pair.server])
    events = await collect(pipeline.source, Exchange(server, client))
    # the responses ("HTTP/1.0 200 OK") pass the same interface and are left out
    assert [(e.method, e.path) for e in events] == REQUESTS
    assert {(e.saddr, e.daddr, e.dport, e.ip) for e in events} == {
        (client_ip, server_ip, port, 4 if family == "ipv4" else 6)
    }
    assert len({e.sport for e in events}) == len(REQUESTS)  # one connection each
    results = await through(events, pipeline.operators)
    *passed, table = results
    assert passed == events
    assert isinstance(table, CountTable)
    assert [(r.key["method"], r.key["path"], r.count) for r in table.rows] == [
        ("GET", "/index.html", 3),
        ("POST", "/form", 1),
        ("HEAD", "/x", 1),
        ("DELETE", "/items/7?force=1", 1),
        ("PUT", "/up", 1),
    ]
    assert line(pipeline, events[4]) == (
        f"{f'{client_ip}:{events[4].sport}':<22} {f'{server_ip}:{port}':<22}"
        " DELETE  /items/7?force=1"
    )


# -- lesson 21: xdp_drop_count -------------------------------------------------

DATAGRAMS = 7
PINGS = 5
ICMP, UDP = 1, 17


class PacketsAndPings:
    """Sends DATAGRAMS UDP datagrams, then PINGS echo requests, from the
    client to the server; ``out``: the number of echo replies, printed."""

    def __init__(self, pair: VethPair, port: int) -> None:
        self.pair, self.port = pair, port
        self.out: list[str] = []

    def __call__(self) -> None:
        pair = self.pair
        udp = pair.peer(pair.client, "datagrams", pair.server4, self.port, DATAGRAMS)
        udp.go()
        udp.finish()
        ping = pair.peer(pair.client, "pings", pair.server4, PINGS)
        ping.go()
        self.out = ping.finish()


def per_protocol(events: list[Any]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for e in events:
        totals[e.protocol] = totals.get(e.protocol, 0) + e.packets
    return totals


@pytest.mark.parametrize("drop", [None, ICMP])
async def test_xdp_drop_count_counts_each_protocol_and_drops_the_one_asked(
    pair: VethPair, port: int, drop: int | None
) -> None:
    args = [pair.server_if, pair.server] + ([] if drop is None else ["--drop", str(drop)])
    pipeline = lesson("xdp_drop_count.py", args)
    run = PacketsAndPings(pair, port)
    events = await collect(pipeline.source, run)
    counted = per_protocol(events)
    assert (counted.get(UDP), counted.get(ICMP)) == (DATAGRAMS, PINGS)
    assert run.out == [str(0 if drop == ICMP else PINGS)]
    assert line(pipeline, events[0]) == f"{events[0].protocol}: {events[0].packets} pkt/s"
    header = pipeline.sink.header  # type: ignore[attr-defined]
    assert header[1:] == ([] if drop is None else ["Dropping protocol 1"])


def xdp_attached(pair: VethPair) -> bool:
    shown = subprocess.run(
        ["ip", "-n", pair.server, "link", "show", pair.server_if],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "xdp" in shown


def test_xdp_drop_count_under_the_cli_prints_counts_and_detaches(
    pair: VethPair, port: int
) -> None:
    run = Running("pipelines/xdp_drop_count.py", pair.server_if, pair.server)
    assert xdp_attached(pair)
    PacketsAndPings(pair, port)()
    code, out, err = run.stop()
    assert code == 0, err
    assert out.splitlines()[0] == "Printing packets per IP protocol-number, hit CTRL+C to stop"
    counted: dict[int, int] = {}
    for text in out.splitlines()[1:]:
        found = re.fullmatch(r"(\d+): (\d+) pkt/s", text)
        assert found, text
        counted[int(found[1])] = counted.get(int(found[1]), 0) + int(found[2])
    assert (counted[UDP], counted[ICMP]) == (DATAGRAMS, PINGS)
    assert not xdp_attached(pair)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["pipelines/xdp_drop_count.py", "ftnope0"], "no interface ftnope0 in this network"),
        (["pipelines/http_filter.py", "lo", "ft-nope"], "no network namespace 'ft-nope'"),
    ],
)
def test_a_missing_interface_or_namespace_gives_one_line_and_exit_2(
    args: list[str], problem: str
) -> None:
    result = flowtrace("run", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert problem in result.stderr
