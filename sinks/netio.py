"""Socket plumbing for the socket sink: addresses, connecting, sending, and
knowing how many bytes a stream peer has really taken.

Sockets are non-blocking and driven by the event loop (``anyio.wait_writable``),
never by a thread.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

__all__ = ["Address", "Connection"]

_KINDS = {
    "tcp": (socket.SOCK_STREAM, True),
    "udp": (socket.SOCK_DGRAM, False),
    "unix": (socket.SOCK_STREAM, True),
    "unixgram": (socket.SOCK_DGRAM, False),
}
_TCPI_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info, Linux >= 4.1


@dataclass(frozen=True)
class Address:
    """Where to send: ``tcp://HOST:PORT``, ``udp://HOST:PORT`` (IPv6 hosts in
    brackets), ``unix:///PATH`` (stream) or ``unixgram:///PATH`` (datagrams)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Address:
        """Raises ``ValueError`` naming the expected forms."""
        forms = "tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH or unixgram:///PATH"
        parts = urlsplit(text)
        if parts.scheme not in _KINDS:
            raise ValueError(f"bad address {text!r}: use {forms}")
        if parts.scheme.startswith("unix"):
            path = parts.netloc + parts.path
            if not path:
                raise ValueError(f"bad address {text!r}: no socket path ({forms})")
            return cls(parts.scheme, path=path)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port:
            raise ValueError(f"bad address {text!r}: needs a host and a port ({forms})")
        return cls(parts.scheme, host=parts.hostname, port=port)

    @property
    def stream(self) -> bool:
        return _KINDS[self.kind][1]

    def __str__(self) -> str:
        if self.path:
            return f"{self.kind}://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"


class Connection:
    """One connected socket.

    :meth:`send` writes all of ``data`` (waiting while the kernel buffer is
    full) and raises ``OSError`` when the peer is gone; :attr:`sent` counts
    the bytes the kernel accepted. :meth:`delivered` is how many of them the
    peer has taken: for TCP the bytes whose acknowledgement reached this host
    (``tcpi_bytes_acked``, still readable after a reset), for Unix stream
    sockets every accepted byte (it is in the peer's queue).
    """

    def __init__(self, sock: socket.socket, address: Address) -> None:
        self.sock = sock
        self.address = address
        self.sent = 0
        self._ack_base = self._acked() if address.kind == "tcp" else 0

    @classmethod
    async def open(cls, address: Address, within: float) -> Connection:
        """Connect within ``within`` seconds; raises ``OSError``."""
        if address.path:
            targets: list[tuple[int, object]] = [(socket.AF_UNIX, address.path)]
        else:
            kind = _KINDS[address.kind][0]
            infos = await anyio.getaddrinfo(address.host, address.port, type=kind)
            targets = [(info[0], info[4]) for info in infos]
        error: OSError = OSError(errno.EHOSTUNREACH, "no address")
        for family, target in targets:
            sock = socket.socket(family, _KINDS[address.kind][0] | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            try:
                with anyio.fail_after(within):
                    await _connect(sock, target)
                return cls(sock, address)
            except TimeoutError:
                sock.close()
                error = OSError(errno.ETIMEDOUT, f"no answer within {within} s")
            except OSError as exc:
                sock.close()
                error = exc
        raise error

    def _acked(self) -> int:
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) < _TCPI_BYTES_ACKED + 8:
            return 0
        return int(struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)[0])

    def delivered(self) -> int:
        """Bytes of :attr:`sent` the peer has taken (see the class docstring)."""
        if self.address.kind != "tcp":
            return self.sent
        try:
            return min(self.sent, self._acked() - self._ack_base)
        except OSError:
            return 0

    def peer_closed(self) -> bool:
        """True when a stream peer has closed its end (what it sent us is discarded)."""
        if not self.address.stream:
            return False
        try:
            while data := self.sock.recv(65536, socket.MSG_DONTWAIT):
                del data  # peers have nothing to say to a sink
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    async def send(self, data: bytes | memoryview) -> None:
        """Send all of ``data`` on a stream socket; one datagram otherwise."""
        view = memoryview(data)
        while True:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            self.sent += n
            if not self.address.stream or n == len(view):
                return
            view = view[n:]

    def close(self) -> None:
        self.sock.close()


async def _connect(sock: socket.socket, target: object) -> None:
    code = sock.connect_ex(target)  # type: ignore[arg-type]
    if code in (errno.EINPROGRESS, errno.EAGAIN):
        await anyio.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, errno.errorcode.get(code, str(code)))
