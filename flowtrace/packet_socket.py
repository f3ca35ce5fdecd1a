"""The output of a socket filter: the packets it passed, parsed in user space.

A :class:`~flowtrace.packet_points.SocketFilter` program decides which
packets its raw socket receives; user space reads them from the socket and
turns each into an event with ``parse(packet, ts)`` (``ts``: CLOCK_MONOTONIC
nanoseconds when the batch was read), or skips it (``parse`` returns None:
a packet the socket received before the filter was attached, or one the
parser does not recognise). There is no BPF map in between.

Loss is the socket's own: packets the kernel could not queue on the socket
(its receive buffer full) are counted by the kernel and read with
``PACKET_STATISTICS``. The socket is closed when the run ends; packets still
queued then are counted as unread.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import Layout
from .loaded import LoadedProgram
from .outputs import Channel, Output, Reader
from .packet_points import raw_socket

__all__ = ["PacketSocket"]

_SOL_PACKET = 263
_PACKET_STATISTICS = 6  # struct tpacket_stats {unsigned tp_packets, tp_drops}; read and reset


@dataclass(frozen=True)
class PacketSocket(Output):
    """Packets a socket filter passed, as events ``parse(packet, ts)`` makes
    (None: not an event). ``snapshot`` bytes of each packet are read."""

    takes_operators = False

    parse: Callable[[bytes, int], Any | None]
    snapshot: int = 65536

    def layout(self, event: type[Any]) -> Layout[Any] | None:
        return None  # the program fills no record: the packet is the record

    def describe(self, event: type[Any]) -> str:
        return f"{event.__name__} parsed from the packets a socket filter passes to its raw socket"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return _PacketChannel(self)


class _PacketChannel(Channel):
    def __init__(self, output: PacketSocket) -> None:
        self._output = output
        self._reader: _PacketReader | None = None

    def declarations(self) -> str:
        return ""

    def connect(self, loaded: LoadedProgram) -> Reader:
        fd = raw_socket(loaded.bpf, [fn for _, fn in loaded.entries])
        # a duplicate of our own: detaching closes bcc's, the drain reads ours
        sock = socket.socket(fileno=socket.dup(fd))
        sock.setblocking(False)
        self._reader = _PacketReader(self._output, sock)
        return self._reader

    def describe(self) -> str:
        return "packets from the socket filter's raw socket"

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


class _PacketReader:
    def __init__(self, output: PacketSocket, sock: socket.socket) -> None:
        self._parse = output.parse
        self._snapshot = output.snapshot
        self._sock = sock
        self._dropped = 0
        buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._capacity = max(1, buffer // 2048)  # about that many typical packets

    @property
    def fd(self) -> int:
        return self._sock.fileno()

    @property
    def max_wait(self) -> float:
        return 0.25

    @property
    def capacity(self) -> int:
        return self._capacity

    def _packets(self, limit: int) -> list[bytes]:
        packets: list[bytes] = []
        while len(packets) < limit:
            try:
                packets.append(self._sock.recv(self._snapshot))
            except BlockingIOError:
                break
        return packets

    def read(self, limit: int) -> list[Any]:
        ts = time.monotonic_ns()
        parse = self._parse
        return [e for e in (parse(p, ts) for p in self._packets(limit)) if e is not None]

    def pending(self) -> bool:
        return False

    def unread(self) -> int:
        return len(self._packets(1 << 20))

    def lost(self) -> int:
        _, drops = struct.unpack(
            "II", self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
        )
        self._dropped += drops
        return self._dropped

    def close(self) -> None:
        self._sock.close()
