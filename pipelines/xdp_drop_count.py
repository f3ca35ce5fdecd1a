"""Lesson 21, xdp_drop_count: packets per IP protocol, counted in the kernel by XDP.

    flowtrace run pipelines/xdp_drop_count.py INTERFACE [NETNS] [--drop PROTOCOL]

After bcc's examples/networking/xdp/xdp_drop_count.py: an XDP program on
INTERFACE (of network namespace NETNS, as ip netns names it; generic XDP,
which every interface has) counts each arriving packet under its IP
protocol number (0: not IP) in a per-CPU array, and drops the packets of
PROTOCOL when given (bcc's example drops all). Every second, the packets
each protocol had in that second; the last lines, on Ctrl-C, cover the
part of a second since.

    $ flowtrace run pipelines/xdp_drop_count.py veth0 web --drop 1
PLACEHOLDER
"""

from flowtrace import Pipeline
from flowtrace.errors import PipelineFileError
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
    netns = args[1] if len(args) > 1 else ""
    return protocol_packets(args[0], netns=netns, drop=drop) | ConsoleSink(line=line, header=header)
