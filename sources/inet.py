"""Internet addresses, TCP states and IP protocols, as tools print them.

Kernel records carry a 16-byte address as two ``u64`` halves (the bytes as
they lie in memory: an IPv4 address is the IPv4-mapped IPv6 address the
network tracepoints give for AF_INET sockets); :func:`address` turns them
back into ``10.200.0.1`` or ``fd00::1``. :data:`ADDRESS_HALVES` is the C
that reads such an address from a tracepoint's ``__u8 x[16]`` field.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "ADDRESS_HALVES",
    "AF_INET",
    "AF_INET6",
    "TCP_STATES",
    "address",
    "ip_protocol",
    "ip_version",
    "tcp_state",
]

AF_INET = 2
AF_INET6 = 10

ADDRESS_HALVES = """\
// Half `half` (0: bytes 0-7, 1: bytes 8-15) of a 16-byte address, as it lies in memory.
static __always_inline u64 ft_address_half(const u8 *address, int half) {
    u64 value = 0;
    __builtin_memcpy(&value, address + 8 * half, 8);
    return value;
}
"""

TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
"""The kernel's TCP states (``include/net/tcp_states.h``) by number, named as
bcc's tools name them."""

_PROTOCOLS = {0: "other", 1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def address(family: int, first: int, second: int) -> str:
    """The address whose 16 bytes are the little-endian ``first`` and
    ``second`` halves: dotted IPv4 for AF_INET (taken from the IPv4-mapped
    form), IPv6 text otherwise."""
    raw = first.to_bytes(8, "little") + second.to_bytes(8, "little")
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def ip_version(family: int) -> int:
    """4 for AF_INET, 6 for AF_INET6 (the IP column of bcc's tools)."""
    return 4 if family == AF_INET else 6


def tcp_state(state: int) -> str:
    """``ESTABLISHED`` for 1...; an unknown number as itself."""
    return TCP_STATES.get(state, str(state))


def ip_protocol(number: int) -> str:
    """``tcp`` for 6...; other numbers as themselves."""
    return _PROTOCOLS.get(number, str(number))
