"""Lesson 21, xdp_drop_count: packets per IP protocol, counted in the kernel by XDP.

    flowtrace run pipelines/xdp_drop_count.py INTERFACE [NETNS] [--drop PROTOCOL]

After bcc's examples/networking/xdp/xdp_drop_count.py: an XDP program on
INTERFACE (of network namespace NETNS, as ip netns names it; generic XDP,
which every interface has) counts each arriving packet under its IP
protocol number (0: not IP) in a per-CPU array, and drops the packets of
PROTOCOL when given (bcc's example drops all). Every second, the packets
each protocol had in that second; the last lines, on Ctrl-C, cover the
part of a second since. Below, the other end of the veth pair sent 7 UDP
datagrams, then 5 pings (none answered), twice:

    $ flowtrace run pipelines/xdp_drop_count.py ftc9c1dfs ft-c9c1df-s --drop 1
    Printing packets per IP protocol-number, hit CTRL+C to stop
    Dropping protocol 1
    0: 2 pkt/s
    1: 5 pkt/s
    17: 7 pkt/s
    1: 5 pkt/s
    17: 7 pkt/s
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.errors import AttachError, KernelUnreadable, PipelineFileError
from flowtrace.parameters import Option
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.xdp import ProtocolPackets, protocol_packets


def line(e: ProtocolPackets) -> str:
    return f"{e.protocol}: {e.packets} pkt/s"


def pipeline(
    interface: str,
    netns: str | None = None,
    *,
    drop: Annotated[int | None, Option(minimum=1, maximum=255, metavar="PROTOCOL")] = None,
) -> Pipeline:
    """Packets per IP protocol each second, counted by XDP on INTERFACE.

    Args:
        interface: the network interface to count the arriving packets of
        netns: its network namespace, as ip netns names it (default: this one)
        drop: also drop the packets of this IP protocol number (1 to 255; 1 is ICMP)
    """
    header = ["Printing packets per IP protocol-number, hit CTRL+C to stop"]
    if drop is not None:
        header.append(f"Dropping protocol {drop}")
    source = protocol_packets(interface, netns=netns or "", drop=drop)
    try:
        source.plan()
    except KernelUnreadable:
        pass  # not root: a replay needs no kernel, and a run says why it cannot attach
    except AttachError as exc:
        raise PipelineFileError(f"xdp_drop_count.py: {exc}") from None
    return source | ConsoleSink(line=line, header=header)
