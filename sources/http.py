"""HTTP requests seen on a network interface, picked out in the kernel by a
socket filter (after bcc's examples/networking/http_filter).

The BPF program runs on every packet of the interface (both directions)
and passes to its raw socket only TCP segments, over IPv4 or IPv6 (no
extension headers), whose payload starts with an HTTP request method;
everything else never reaches user space. User space reads the request
line (``GET /index.html HTTP/1.1``) of each packet it gets. A request line
split over two segments is not seen (the filter looks at one packet).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Annotated

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import Char, u8, u16, u64
from flowtrace.packet_points import SocketFilter
from flowtrace.packet_socket import PacketSocket
from flowtrace.probes import Probe

__all__ = ["METHODS", "PATH_BYTES", "HttpRequest", "http_requests", "parse_request"]

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")
"""Request methods the filter passes (RFC 9110)."""

PATH_BYTES = 256
"""Bytes kept of a request's target (its path)."""


class HttpRequest(Event, frozen=True):
    """An HTTP request line in a packet: ``method`` and ``path`` (the
    request target, at most :data:`PATH_BYTES` - 1 bytes kept), between
    ``saddr:sport`` (the client) and ``daddr:dport``. ``ts``: CLOCK_MONOTONIC
    nanoseconds when user space read the packet."""

    ts: u64
    ip: u8
    saddr: Annotated[str, Char(40)]
    sport: u16
    daddr: Annotated[str, Char(40)]
    dport: u16
    method: Annotated[str, Char(8)]
    path: Annotated[str, Char(PATH_BYTES)]


def _word(method: str) -> int:
    """The first four bytes of ``method`` followed by a space, as load_word reads them."""
    return int.from_bytes(f"{method} ".encode()[:4], "big")


# Offsets are from the start of the Ethernet frame; load_* read big-endian
# and end the program (passing nothing) when asked for bytes past the end.
_FILTER = (
    """\
u32 tcp;
u16 type = load_half(ctx, 12);
if (type == 0x0800) {  // IPv4: TCP, first fragment only
    if (load_byte(ctx, 14 + 9) != 6 || (load_half(ctx, 14 + 6) & 0x1FFF))
        return 0;
    tcp = 14 + (load_byte(ctx, 14) & 0xF) * 4;
} else if (type == 0x86DD) {  // IPv6: TCP right after the fixed header
    if (load_byte(ctx, 14 + 6) != 6)
        return 0;
    tcp = 14 + 40;
} else {
    return 0;
}
u32 payload = tcp + (load_byte(ctx, tcp + 12) >> 4) * 4;
switch (load_word(ctx, payload)) {
"""
    + "".join(f"case {_word(m):#010x}:  // {m!r}\n" for m in METHODS)
    + """\
    return -1;  // the whole packet, to the socket
}
return 0;"""
)


def parse_request(packet: bytes, ts: int) -> HttpRequest | None:
    """The request in an Ethernet frame the filter passed; None for a frame
    that is not one (frames queued before the filter was attached)."""
    try:
        (kind,) = struct.unpack_from("!H", packet, 12)
        if kind == 0x0800:
            tcp = 14 + (packet[14] & 0xF) * 4
            version, src, dst = 4, packet[26:30], packet[30:34]
        elif kind == 0x86DD:
            tcp = 14 + 40
            version, src, dst = 6, packet[22:38], packet[38:54]
        else:
            return None
        sport, dport = struct.unpack_from("!HH", packet, tcp)
        payload = packet[tcp + (packet[tcp + 12] >> 4) * 4 :]
    except (IndexError, struct.error):
        return None
    line = payload.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    method, _, rest = line.partition(" ")
    if method not in METHODS:
        return None
    path = rest.rpartition(" HTTP/")[0] or rest
    return HttpRequest(
        ts,
        version,
        str(ipaddress.ip_address(src)),
        sport,
        str(ipaddress.ip_address(dst)),
        dport,
        method,
        path.encode()[: PATH_BYTES - 1].decode("utf-8", "replace"),
    )


def http_requests(interface: str, *, netns: str = "") -> KernelSource[HttpRequest]:
    """HTTP requests in packets on ``interface`` (of network namespace
    ``netns``, default this process's), in either direction."""
    probe = Probe(
        f"HTTP requests on {interface}", SocketFilter(interface, netns), body=_FILTER
    )
    return KernelSource(
        HttpRequest, probe, name="http_requests", output=PacketSocket(parse_request)
    )
