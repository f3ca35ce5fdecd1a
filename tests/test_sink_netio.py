"""The socket sink's connections (sinks/netio.py) on their own: what a
refused or unreachable connection raises, what a stream peer has taken."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from flowtrace.sinks.netio import Address, Connection

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    """A loopback TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_raises_with_its_errno() -> None:
    address = Address.parse(f"tcp://127.0.0.1:{closed_port()}")
    with pytest.raises(OSError) as refused:
        await Connection.open(address, 5.0)
    assert refused.value.errno == errno.ECONNREFUSED
    assert refused.value.strerror == "ECONNREFUSED"


async def test_a_missing_unix_socket_raises_with_its_errno(tmp_path: Path) -> None:
    address = Address.parse(f"unix://{tmp_path}/none.sock")
    with pytest.raises(OSError) as missing:
        await Connection.open(address, 5.0)
    assert (missing.value.errno, missing.value.strerror) == (errno.ENOENT, "ENOENT")


async def test_a_unix_stream_peer_has_taken_every_byte_sent(tmp_path: Path) -> None:
    path = str(tmp_path / "peer.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        connection = await Connection.open(Address.parse(f"unix://{path}"), 5.0)
        peer, _ = listener.accept()
        try:
            await connection.send(b"x" * 1000)
            assert (connection.sent, connection.delivered()) == (1000, 1000)
            assert peer.recv(2000) == b"x" * 1000
            assert not connection.peer_closed()
            peer.close()
            assert connection.peer_closed()
        finally:
            connection.close()
