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

from flowtrace import Pipeline
from flowtrace.errors import AttachError, PipelineFileError
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.xdp import ProtocolPackets, protocol_packets

USAGE = "run flowtrace run pipelines/xdp_drop_count.py INTERFACE [NETNS] [--drop PROTOCOL]"


def line(e: ProtocolPackets) -> str:
    return f"{e.protocol}: {e.packets} pkt/s"


def pipeline(args: list[str]) -> Pipeline:
    drop = None
    if "--drop" in args:
        at = args.index("--drop")
        number = args[at + 1] if at + 1 < len(args) else ""
        if not (number.isascii() and number.isdecimal() and 1 <= int(number) <= 255):
            raise PipelineFileError(
                f"xdp_drop_count.py: --drop takes a protocol number from 1 to 255: {USAGE}"
            )
        drop = int(number)
        args = args[:at] + args[at + 2 :]
    if not 1 <= len(args) <= 2 or any(a.startswith("-") for a in args):
        raise PipelineFileError(f"xdp_drop_count.py: bad arguments {' '.join(args)!r}: {USAGE}")
    header = ["Printing packets per IP protocol-number, hit CTRL+C to stop"]
    if drop is not None:
        header.append(f"Dropping protocol {drop}")
    source = protocol_packets(args[0], netns=args[1] if len(args) > 1 else "", drop=drop)
    try:
        source.plan()
    except AttachError as exc:
        raise PipelineFileError(f"xdp_drop_count.py: {exc}") from None
    return source | ConsoleSink(line=line, header=header)
