"""Without a kernel: the user-space halves of the network sources (packet
parsing, addresses, counters read as increases, records finished in user
space), the C the new attach points generate, and the lessons' one-line
argument errors."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest
from clirun import flowtrace_table

from flowtrace.converted_output import Converted
from flowtrace.counter_output import CounterArray
from flowtrace.errors import PipelineDefinitionError
from flowtrace.outputs import RingBuffer
from flowtrace.packet_points import SocketFilter, Xdp
from flowtrace.probes import Param
from flowtrace.sources.http import HttpRequest, parse_request
from flowtrace.sources.inet import address, ip_protocol, tcp_state
from flowtrace.sources.tcp import TcpRetransmit, TcpRetransmitRecord
from flowtrace.sources.xdp import ProtocolPackets, protocol_packets

# -- HTTP requests in Ethernet frames ------------------------------------------


def frame(payload: bytes, *, v6: bool = False, sport: int = 40000, dport: int = 80) -> bytes:
    """An Ethernet frame carrying ``payload`` in a TCP segment (20-byte header)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    macs = bytes(12)
    if v6:
        src = ipaddress.IPv6Address("fd00::1").packed
        dst = ipaddress.IPv6Address("fd00::2").packed
        ip = struct.pack("!IHBB", 6 << 28, len(tcp) + len(payload), 6, 64) + src + dst
        return macs + b"\x86\xdd" + ip + tcp + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp) + len(payload),
        0,
        0,
        64,
        6,
        0,
        bytes([10, 200, 0, 1]),
        bytes([10, 200, 0, 2]),
    )
    return macs + b"\x08\x00" + header + tcp + payload


def test_a_request_line_becomes_its_method_and_path() -> None:
    request = b"DELETE /items/7?force=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_request(frame(request), 5) == HttpRequest(
        5, 4, "10.200.0.1", 40000, "10.200.0.2", 80, "DELETE", "/items/7?force=1"
    )
    got = parse_request(frame(b"GET / HTTP/1.0\r\n\r\n", v6=True, dport=8080), 6)
    assert got == HttpRequest(6, 6, "fd00::1", 40000, "fd00::2", 8080, "GET", "/")


@pytest.mark.parametrize(
    "payload",
    [b"HTTP/1.1 200 OK\r\n\r\n", b"", b"GETTING /x HTTP/1.1\r\n", b"get /x HTTP/1.1\r\n"],
)
def test_what_is_not_a_request_is_skipped(payload: bytes) -> None:
    assert parse_request(frame(payload), 0) is None


def test_frames_that_are_not_tcp_over_ip_or_are_cut_short_are_skipped() -> None:
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    assert parse_request(arp, 0) is None
    assert parse_request(frame(b"GET / HTTP/1.1\r\n")[:40], 0) is None


def test_long_paths_keep_what_the_event_holds() -> None:
    got = parse_request(frame(b"GET /" + b"a" * 400 + b" HTTP/1.1\r\n"), 0)
    assert got is not None and got.path == "/" + "a" * 254


# -- addresses, states, protocols ------------------------------------------------


def halves(text: str) -> tuple[int, int]:
    """The two little-endian u64 halves of an address as the tracepoints store it."""
    ip = ipaddress.ip_address(text)
    raw = ip.packed if ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{text}").packed
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def test_addresses_come_back_as_text() -> None:
    assert address(2, *halves("10.200.0.1")) == "10.200.0.1"
    assert address(10, *halves("fd00::2")) == "fd00::2"
    assert address(10, *halves("2001:db8::1:0:0:1")) == "2001:db8::1:0:0:1"


def test_states_and_protocols_have_the_names_bcc_tools_print() -> None:
    assert [tcp_state(n) for n in (1, 2, 7, 12, 99)] == [
        "ESTABLISHED",
        "SYN_SENT",
        "CLOSE",
        "NEW_SYN_RECV",
        "99",
    ]
    assert [ip_protocol(n) for n in (1, 6, 17, 200)] == ["icmp", "tcp", "udp", "200"]


# -- counters read as increases -------------------------------------------------


class FakeCounter:
    def __init__(self, value: int) -> None:
        self.value = value


class FakeTable:
    """A per-CPU array as bcc's table shows it: key -> per-CPU values."""

    def __init__(self, slots: int, cpus: int = 2) -> None:
        self.values = [[0] * cpus for _ in range(slots)]

    def items(self) -> list[tuple[FakeCounter, list[int]]]:
        return [(FakeCounter(k), v) for k, v in enumerate(self.values)]


class FakeLoaded:
    def __init__(self, table: FakeTable) -> None:
        self._table = table
        self.detached = False

    def table(self, name: str) -> FakeTable:
        return self._table


def made(slot: int, increase: int, ts: int) -> tuple[int, int]:
    return slot, increase


def test_counters_are_read_once_a_period_as_increases_and_once_more_after_detaching() -> None:
    table = FakeTable(4)
    loaded = FakeLoaded(table)
    channel = CounterArray(made, slots=4, period=3600).channel(None)
    assert "BPF_PERCPU_ARRAY(ft_counts, u64, 4);" in channel.declarations()
    reader = channel.connect(loaded)  # type: ignore[arg-type]
    try:
        table.values[1] = [2, 3]
        assert reader.read(100) == []  # the period has not passed
        assert 3500 < reader.max_wait <= 3600
        loaded.detached = True  # what the maps hold now is final
        assert reader.read(100) == [(1, 5)]
        table.values[1] = [4, 3]
        table.values[3] = [0, 1]
        assert reader.read(100) == [(1, 2), (3, 1)]  # what grew since, never the totals
        assert reader.read(100) == []
        assert (reader.unread(), reader.lost(), reader.pending()) == (0, 0, False)
    finally:
        channel.close()


def test_counter_outputs_refuse_bounds_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="slots"):
        CounterArray(made, slots=0)
    with pytest.raises(ValueError, match="period"):
        CounterArray(made, period=0)


def test_only_a_protocol_number_can_be_dropped() -> None:
    for bad in (0, 256, -1):
        with pytest.raises(PipelineDefinitionError, match="from 1 to 255"):
            protocol_packets("lo", drop=bad)
    source = protocol_packets("lo", drop=17)
    assert source.event_type() is ProtocolPackets
    assert "return protocol == 17 ? XDP_DROP : XDP_PASS;" in source.probes[0].body


# -- records finished in user space ----------------------------------------------


class FakeReader:
    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches

    def read(self, limit: int) -> list[Any]:
        return self.batches.pop(0) if self.batches else []


def test_converted_records_carry_the_record_layout_and_emit_the_event() -> None:
    output = Converted(RingBuffer(8), TcpRetransmitRecord, lambda batch: [len(batch)])
    layout = output.layout(TcpRetransmit)
    assert layout is not None and layout.event is TcpRetransmitRecord
    assert output.describe(TcpRetransmit) == (
        "TcpRetransmitRecord via the ring buffer, 8 pages, as TcpRetransmit"
    )
    from flowtrace.converted_output import _ConvertedReader

    reader = _ConvertedReader(FakeReader([[1, 2, 3], []]), output.convert)  # type: ignore[arg-type]
    assert reader.read(10) == [3]
    assert reader.read(10) == []  # nothing read: nothing converted


# -- attach points on an interface ---------------------------------------------


def test_interface_points_say_where_and_pass_the_packet_context() -> None:
    xdp = Xdp("veth0", "web")
    assert xdp.describe() == "XDP (generic) on veth0 (network namespace web)"
    assert xdp.entry("fn", "body({args})", [Param("n")]) == (
        "int fn(struct xdp_md *ctx) {\n    return body(ctx, (u64)0);\n}"
    )
    sf = SocketFilter("eth0")
    assert sf.describe() == "socket filter on a raw socket on eth0"
    assert sf.entry("fn", "body({args})", []) == (
        "int fn(struct __sk_buff *skb) {\n    return body(skb);\n}"
    )
    with pytest.raises(ValueError, match="generic or native"):
        Xdp("veth0", mode="offload")


# -- the lessons' arguments ------------------------------------------------------


BAD_NETWORK_LESSON_ARGUMENTS = [
    (["pipelines/http_filter.py"], "the following arguments are required: interface"),
    (["pipelines/http_filter.py", "a", "b", "c"], "unrecognized arguments: c"),
    (["pipelines/xdp_drop_count.py"], "the following arguments are required: interface"),
    (["pipelines/xdp_drop_count.py", "lo", "--drop", "x"], "--drop: 'x' is not a whole"),
    (["pipelines/xdp_drop_count.py", "lo", "--drop", "0"], "--drop: '0' is less than 1"),
    (["pipelines/xdp_drop_count.py", "lo", "--drop", "256"], "'256' is more than 255"),
    (["pipelines/xdp_drop_count.py", "lo", "ns", "more"], "unrecognized arguments: more"),
]


@pytest.mark.parametrize(("args", "problem"), BAD_NETWORK_LESSON_ARGUMENTS)
def test_bad_network_lesson_arguments_give_one_line_and_exit_2(
    args: list[str], problem: str
) -> None:
    table = tuple(("run", *a) for a, _ in BAD_NETWORK_LESSON_ARGUMENTS)
    command = ("run", *args)
    result = flowtrace_table(table)[command]
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert problem in result.stderr
    assert result.stderr.endswith(f"; see flowtrace run {Path(args[0]).stem} --help\n")


# -- the tools' arguments --------------------------------------------------------------------------


BAD_TOOL_ARGUMENTS = [
    (["execsnoop.py", "-z"], "unrecognized arguments: -z"),
    (["biolatency.py", "0"], "argument interval: '0' is less than 1"),
    (["runqlat.py", "1", "2", "3"], "unrecognized arguments: 3"),
    (["profile.py", "-U", "-K"], "-U (user stacks only) and -K (kernel stacks only)"),
    (["offcputime.py", "-K", "-U"], "-U (user stacks only) and -K (kernel stacks only)"),
    (["offcputime.py", "-m", "x"], "argument --min-block-time/-m: 'x' is not a whole number"),
    (["opensnoop.py", "-p", "0"], "argument --pid/-p: '0' is less than 1"),
    (["tcplife.py", "-D", "65536"], "argument --remoteport/-D: '65536' is more than 65535"),
]


@pytest.mark.parametrize(("args", "problem"), BAD_TOOL_ARGUMENTS)
def test_bad_tool_arguments_give_one_line_and_exit_2(args: list[str], problem: str) -> None:
    path = f"pipelines/tools/{args[0]}"
    table = tuple(("run", f"pipelines/tools/{a[0]}", *a[1:]) for a, _ in BAD_TOOL_ARGUMENTS)
    command = ("run", path, *args[1:])
    result = flowtrace_table(table)[command]
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert problem in result.stderr
    # the fix names the file: the tools are not shipped pipelines found by name
    assert result.stderr.endswith(f"; see flowtrace run {path} --help\n")
