"""Packets per IP protocol, counted in the kernel by an XDP program
(after bcc's examples/networking/xdp/xdp_drop_count.py).

The program runs on every packet arriving at the interface, before the
network stack: it counts the packet under its IP protocol number (IPv4's
protocol, IPv6's next header; 0 for anything not IP, such as ARP) and
passes it on, or drops it when its protocol is the one asked to be dropped.
Counts stay in the kernel (a per-CPU array); user space reads them every
``period`` seconds and once more at the end, so the increases add up to
exactly the packets counted (see :mod:`flowtrace.counter_output`).
"""

from __future__ import annotations

from flowtrace.counter_output import CounterArray
from flowtrace.errors import PipelineDefinitionError
from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import u8, u64
from flowtrace.packet_points import Xdp
from flowtrace.probes import Probe

__all__ = ["ProtocolPackets", "protocol_packets"]


class ProtocolPackets(Event, frozen=True):
    """``packets`` of IP protocol ``protocol`` that arrived since the
    previous read (one period), read at ``ts`` (CLOCK_MONOTONIC ns)."""

    ts: u64
    protocol: u8
    packets: u64


def _event(slot: int, increase: int, ts: int) -> ProtocolPackets:
    return ProtocolPackets(ts, slot, increase)


_HEADERS = """\
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
"""

_COUNT = """\
struct xdp_md *xdp = ctx;
void *data = (void *)(long)xdp->data;
void *end = (void *)(long)xdp->data_end;
struct ethhdr *eth = data;
u32 protocol = 0;
if ((void *)(eth + 1) <= end) {
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) <= end)
            protocol = ip->protocol;
    } else if (eth->h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) <= end)
            protocol = ip6->nexthdr;
    }
}
ft_count(protocol);
"""


def protocol_packets(
    interface: str,
    *,
    netns: str = "",
    drop: int | None = None,
    period: float = 1.0,
    mode: str = "generic",
) -> KernelSource[ProtocolPackets]:
    """Packets arriving at ``interface`` (of network namespace ``netns``,
    default this process's) per IP protocol, every ``period`` seconds; with
    ``drop`` (an IP protocol number, 1 to 255) the packets of that protocol
    are dropped after being counted. ``mode``: generic XDP (any interface)
    or native (in drivers that support it)."""
    if drop is not None and (not isinstance(drop, int) or not 1 <= drop <= 255):
        raise PipelineDefinitionError(
            f"protocol_packets: drop must be an IP protocol number from 1 to 255, not {drop!r}"
        )
    what = f"packets arriving at {interface}"
    action = "return XDP_PASS;"
    if drop is not None:
        what += f", dropping protocol {drop}"
        action = f"return protocol == {drop} ? XDP_DROP : XDP_PASS;"
    probe = Probe(what, Xdp(interface, netns, mode), body=_COUNT + action)
    return KernelSource(
        ProtocolPackets,
        probe,
        prelude=_HEADERS,
        name="protocol_packets",
        output=CounterArray(_event, slots=256, period=period),
    )
