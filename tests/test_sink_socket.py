"""The socket sink against real peers on loopback: TCP, UDP, Unix stream and
Unix datagram receivers started by the test, stopped mid-stream and started
again. Every event is either received by a peer or counted as dropped."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus
from feeding import FeedSource

from flowtrace import Event, Pipeline, Run, StageError
from flowtrace.ktypes import u64
from flowtrace.sinks.socket import SocketSink
from flowtrace.sinkspec import SinkSpecError, sink_from_spec
from flowtrace.testing import ListSource

pytestmark = pytest.mark.anyio


class Tick(Event, frozen=True):
    n: u64


class Peer:
    """A receiver on loopback that keeps every whole record it reads.

    ``stop`` reads what has already arrived, then closes every socket, like a
    shipper shutting down; ``start`` listens again on the same address.
    """

    def __init__(self, kind: str, where: Any, framing: str = "ndjson") -> None:
        self.kind, self.where, self.framing = kind, where, framing
        self.records: list[Any] = []
        self.broken = 0
        self._socks: list[socket.socket] = []
        self._buffers: dict[socket.socket, bytes] = {}
        self._scope: anyio.CancelScope | None = None

    def _bind(self) -> socket.socket:
        family = socket.AF_UNIX if self.kind.startswith("unix") else socket.AF_INET
        stream = self.kind in ("tcp", "unix")
        sock = socket.socket(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if family == socket.AF_UNIX:
            Path(self.where).unlink(missing_ok=True)
        sock.bind(self.where)
        if stream:
            sock.listen()
        sock.setblocking(False)
        self.where = sock.getsockname()
        return sock

    @property
    def url(self) -> str:
        if self.kind.startswith("unix"):
            return f"{self.kind}://{self.where}"
        return f"{self.kind}://127.0.0.1:{self.where[1]}"

    def events(self) -> list[int]:
        return [r["data"]["n"] for r in self.records if r["type"] == "event"]

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        await tg.start(self._serve)

    async def _serve(self, *, task_status: TaskStatus[None]) -> None:
        main = self._bind()
        self._socks = [main]
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tg:
                task_status.started()
                if self.kind in ("udp", "unixgram"):
                    await self._read(main)
                while True:
                    await anyio.wait_readable(main)
                    conn, _ = main.accept()
                    conn.setblocking(False)
                    self._socks.append(conn)
                    tg.start_soon(self._read, conn)

    async def _read(self, sock: socket.socket) -> None:
        while self._drain(sock):
            await anyio.wait_readable(sock)

    def _drain(self, sock: socket.socket) -> bool:
        """Take everything readable now; False at end of stream."""
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data and self.kind in ("tcp", "unix"):
                return False
            self._parse(sock, data)

    def _parse(self, sock: socket.socket, data: bytes) -> None:
        if self.kind in ("udp", "unixgram"):
            body = data[4:] if self.framing == "msgpack" else data
            self.records.append(self._decode(body))
            return
        buffer = self._buffers.get(sock, b"") + data
        while True:
            if self.framing == "msgpack":
                if len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">I", buffer[:4])[0]:
                    break
                size = struct.unpack(">I", buffer[:4])[0]
                frame, buffer = buffer[4 : 4 + size], buffer[4 + size :]
            else:
                line, sep, rest = buffer.partition(b"\n")
                if not sep:
                    break
                frame, buffer = line, rest
            self.records.append(self._decode(frame))
        self._buffers[sock] = buffer

    def _decode(self, frame: bytes) -> Any:
        if self.framing == "msgpack":
            return msgspec.msgpack.decode(frame)
        return json.loads(frame)

    def stop(self) -> None:
        """Read what arrived, then close everything (no await in between)."""
        for sock in self._socks:
            if sock.type == socket.SOCK_DGRAM or sock is not self._socks[0]:
                self._drain(sock)
        self.broken += sum(1 for rest in self._buffers.values() if rest)
        self._buffers.clear()
        for sock in self._socks:
            sock.close()
        if self._scope is not None:
            self._scope.cancel()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds: counters and peers' records
    have no change notification, so poll them."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.002)  # poll interval of this bounded wait


def where(kind: str, tmp_path: Path) -> Any:
    return str(tmp_path / f"{kind}.sock") if kind.startswith("unix") else ("127.0.0.1", 0)


@pytest.mark.parametrize("kind", ["tcp", "unix", "unixgram"])
async def test_peer_stopped_and_restarted_every_event_accounted(kind: str, tmp_path: Path) -> None:
    peer = Peer(kind, where(kind, tmp_path))
    source = FeedSource(Tick)
    async with anyio.create_task_group() as peers:
        await peer.start(peers)
        sink = SocketSink(peer.url, buffer=50, backoff=0.01, backoff_max=0.05)
        pipeline = Pipeline(source, [], sink)
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            sink = cast(SocketSink, run.sink)
            sink_stats = run.stats.stages[-1]
            await source.feed(200, batch=20)
            await until(lambda: len(peer.events()) == 200, "first peer has 200")
            peer.stop()
            first = peer.events()
            await source.feed(200, batch=20)  # the peer is away: 50 buffered, the rest dropped
            await until(
                lambda: sink_stats.emitted + sink_stats.dropped_total == 400, "sink took 400"
            )
            assert sink.delivered == 200
            assert sink_stats.dropped.get("buffer_full", 0) > 0
            second = Peer(kind, peer.where)
            await second.start(peers)
            with anyio.fail_after(20):  # batches arriving after the backoff reconnect
                while sink.delivered == 200:
                    await source.feed(20, batch=20)
                    await anyio.sleep(0.01)  # feeding pace while the condition is polled
            dropped_before = sink_stats.dropped_total
            await source.feed(200, batch=20)
            source.sender.close()
        # the pipeline has ended: close delivered what was buffered
        await until(lambda: len(first) + len(second.events()) == sink.delivered, "all arrived")
        second.stop()
    received = first + second.events()
    dropped = sink_stats.dropped
    assert set(dropped) <= {"buffer_full"}, dropped
    assert len(received) + sink_stats.dropped_total == source.sent
    assert sink.delivered == len(received)
    assert received == sorted(set(received)), "duplicated or reordered events"
    assert sink_stats.dropped_total == dropped_before, "nothing dropped once reconnected"
    assert received[-200:] == list(range(source.sent - 200, source.sent))
    # the 50-record buffer held the oldest events of the second 200 and the
    # run's reports (connection changes, loss), which take a few places
    kept = sorted(set(range(200, 400)) & set(received))
    assert kept == list(range(200, 200 + len(kept))) and 45 <= len(kept) <= 50, kept
    assert peer.broken == second.broken == 0
    summary = [r for r in second.records if r["type"] == "summary"]
    assert len(summary) == 1


async def test_tcp_msgpack_framing_delivers_records_in_order() -> None:
    peer = Peer("tcp", ("127.0.0.1", 0), framing="msgpack")
    async with anyio.create_task_group() as peers:
        await peer.start(peers)
        sink = SocketSink(peer.url, framing="msgpack")
        source = FeedSource(Tick)
        pipeline = Pipeline(source, [], sink)
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            sink = cast(SocketSink, run.sink)
            await source.feed(1000, batch=100)
            source.sender.close()
        await until(lambda: len(peer.events()) == 1000, "all arrived")
        peer.stop()
    assert peer.events() == list(range(1000))
    assert peer.records[-1]["type"] == "summary"
    assert peer.records[-1]["v"] == 1
    assert sink.delivered == 1000


async def test_udp_delivers_while_the_peer_listens() -> None:
    """UDP is best effort: what the peer gets is at most what was delivered."""
    peer = Peer("udp", ("127.0.0.1", 0))
    async with anyio.create_task_group() as peers:
        await peer.start(peers)
        sink = SocketSink(peer.url, backoff=0.01, backoff_max=0.05)
        source = FeedSource(Tick)
        pipeline = Pipeline(source, [], sink)
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            sink = cast(SocketSink, run.sink)
            for round_ in range(1, 6):
                await source.feed(20, batch=20)
                await until(lambda: len(peer.events()) == 20 * round_, "batch arrived")  # noqa: B023
            source.sender.close()
        peer.stop()
    assert peer.events() == list(range(100))
    assert sink.delivered == 100


async def test_peer_never_there_buffer_bound_then_undelivered(tmp_path: Path) -> None:
    sink = SocketSink(f"unix://{tmp_path}/nobody.sock", buffer=30, backoff=0.01, close_timeout=0.2)
    source = FeedSource(Tick)
    pipeline = Pipeline(source, [], sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        sink = cast(SocketSink, run.sink)
        await source.feed(60, batch=20)
        source.sender.close()
    stats = run.stats.stages[-1]
    assert sink.delivered == 0
    assert stats.dropped["buffer_full"] + stats.dropped["undelivered"] == 60
    assert stats.dropped["undelivered"] <= 30
    assert any("cannot connect" in line for line in run.stats.attached)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("socket:", "socket needs an address"),
        ("socket:tcp://127.0.0.1", "needs a host and a port"),
        ("socket:http://127.0.0.1:80", "use tcp://HOST:PORT"),
        ("socket:unix://", "no socket path"),
        ("socket:tcp://127.0.0.1:9,framing=xml", "framing must be ndjson or msgpack"),
        ("socket:tcp://127.0.0.1:9,speed=3", "unknown option 'speed=3'"),
        ("socket:tcp://127.0.0.1:9,backoff_max=nan", "finite, positive times"),
        ("socket:tcp://127.0.0.1:9,backoff=inf", "finite, positive times"),
        ("socket:tcp://127.0.0.1:9,backoff=0.5,backoff_max=0.1", "backoff <= backoff_max"),
    ],
)
def test_bad_socket_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(SinkSpecError, match=message):
        sink_from_spec(spec)


def test_socket_spec_with_options() -> None:
    sink = sink_from_spec("socket:udp://[::1]:9000,framing=msgpack,buffer=7")
    assert isinstance(sink, SocketSink)
    assert (str(sink.address), sink.framing, sink.buffer) == ("udp://[::1]:9000", "msgpack", 7)


def test_socket_spec_docstring_names_every_option_it_accepts() -> None:
    doc = SocketSink.from_spec.__doc__ or ""
    sink = sink_from_spec(
        "socket:tcp://127.0.0.1:9,framing=ndjson,buffer=5,backoff=0.5,backoff_max=2"
    )
    assert isinstance(sink, SocketSink)
    assert (sink.buffer, sink.backoff, sink.backoff_max) == (5, 0.5, 2.0)
    for option in ("framing=", "buffer=", "backoff=", "backoff_max="):
        assert f"[,{option}" in doc, option


async def test_a_batch_that_cannot_be_encoded_is_counted() -> None:
    peer = Peer("tcp", ("127.0.0.1", 0))
    async with anyio.create_task_group() as peers:
        await peer.start(peers)
        run = Run(Pipeline(ListSource([1, 2, object()], batch_size=3), [], SocketSink(peer.url)))
        with pytest.raises(StageError, match="unsupported"):
            await run.run()
        peer.stop()
    stats = run.stats.stages[-1]
    assert stats.dropped == {"encode_error": 3}
    assert stats.received == stats.emitted + stats.dropped_total == 3


async def test_datagram_too_large_for_the_socket_is_dropped_and_counted() -> None:
    peer = Peer("udp", ("127.0.0.1", 0))
    async with anyio.create_task_group() as peers:
        await peer.start(peers)
        items: list[Any] = [1, "x" * 100_000, 2]  # 100 kB: no UDP datagram holds it
        run = Run(Pipeline(ListSource(items, batch_size=3), [], SocketSink(peer.url)))
        await run.run()
        sink = cast(SocketSink, run.sink)
        await until(lambda: any(r["type"] == "summary" for r in peer.records), "summary")
        peer.stop()
    stats = run.stats.stages[-1]
    assert stats.dropped == {"too_large": 1}
    assert sink.delivered == 2
    assert stats.received == sink.delivered + stats.dropped_total
    assert [r["data"] for r in peer.records if r["type"] == "value"] == [1, 2]


def _whole_lines(data: bytes) -> tuple[list[Any], int]:
    """The records of the whole lines in ``data``, and 1 if it ends mid-line."""
    *whole, rest = data.split(b"\n")
    return [json.loads(line) for line in whole], int(bool(rest))


async def test_tcp_peer_reset_mid_send_every_event_once() -> None:
    """The first peer stops reading until the sink is blocked mid-send, reads
    a little more (acknowledged while the sink still waits), then resets the
    connection: the sink's partial-send path counts what the peer
    acknowledged as delivered, also what it learns of only after the reset,
    and sends the rest, whole, to a second peer."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    source = FeedSource(Tick)
    sink = SocketSink(f"tcp://127.0.0.1:{port}", buffer=10_000_000, backoff=0.01, backoff_max=0.05)
    pipeline = Pipeline(source, [], sink)
    feeding = True
    fed = anyio.Event()

    async def feeder() -> None:
        while feeding:
            await source.feed(100, batch=100)
        fed.set()

    first = b""
    second = Peer("tcp", ("127.0.0.1", port))
    async with anyio.create_task_group() as peers:
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            sink = cast(SocketSink, run.sink)
            stats = run.stats.stages[-1]
            tg.start_soon(feeder)
            with anyio.fail_after(20):
                await anyio.wait_readable(listener)
                conn, _ = listener.accept()
                conn.setblocking(False)
                while len(first) < 60_000:
                    await anyio.wait_readable(conn)
                    first += conn.recv(65536)
                # stop reading until nothing moves: the sink is blocked in send.
                # Not a fixed wait: "still" has no notification, so the feed
                # is watched until it stands 0.3 s (socket autotuning grows
                # the send buffer for seconds, and the peer's last ACK lags
                # its data; both must settle before the reset)
                sent = -1
                while sent != source.sent:
                    sent = source.sent
                    await anyio.sleep(0.3)
                # 100 kB more: far less than half of the sink's full send
                # buffer (MBs by now), so the ACKs do not wake its send
                more = len(first) + 100_000
                while len(first) < more:
                    await anyio.wait_readable(conn)
                    first += conn.recv(more - len(first))
            # bytes the peer's kernel acknowledged but this peer did not read
            # count as delivered: take them too (peeking does not open the
            # window), once the sink saw every byte the peer's kernel holds
            # acknowledged (a reset discards what it holds unacknowledged, and
            # the sink then rightly sends that again)
            def held_all_acknowledged() -> bool:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                held = struct.unpack("i", fcntl.ioctl(conn, termios.FIONREAD, b"\0" * 4))[0]
                connection = sink._conn  # what the sink counts as taken
                return connection is not None and connection.delivered() == len(first) + held

            await until(held_all_acknowledged, "the peer's last ACK")
            first += conn.recv(1 << 24, socket.MSG_PEEK)
            counted_before_reset = sink.delivered
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # reset
            listener.close()
            await until(lambda: any("send failed" in a for a in run.stats.attached), "reset")
            feeding = False
            with anyio.fail_after(20):
                await fed.wait()  # its last feed is in: only now may the test feed
            await second.start(peers)
            with anyio.fail_after(20):
                while not second.events():
                    await source.feed(100, batch=100)
                    await anyio.sleep(0.01)  # feeding pace while the condition is polled
            source.sender.close()
        records, broken = _whole_lines(first)
        got = [r["data"]["n"] for r in records if r["type"] == "event"]
        await until(lambda: len(got) + len(second.events()) >= sink.delivered, "all arrived")
        second.stop()
    received = got + second.events()
    assert stats.dropped == {}
    assert stats.received == source.sent == sink.delivered + stats.dropped_total
    assert len(set(received)) == sink.delivered, "lost"
    assert sorted(set(received)) == list(range(source.sent))
    assert len(received) == len(set(received)), "duplicated"
    assert broken <= 1 and second.broken == 0
    assert counted_before_reset < len(got) - 1000  # the rest was counted after the reset


async def test_flapping_peer_reports_a_bounded_number_of_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "flap.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    listener.setblocking(False)

    async def hang_up_on_everyone() -> None:
        while True:
            await anyio.wait_readable(listener)
            listener.accept()[0].close()

    source = FeedSource(Tick)
    sink = SocketSink(f"unix://{path}", backoff=0.001, backoff_max=0.002)
    pipeline = Pipeline(source, [], sink)
    limit = sink.reported_changes
    async with anyio.create_task_group() as peers:
        peers.start_soon(hang_up_on_everyone)
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            sink = cast(SocketSink, run.sink)
            with anyio.fail_after(20):
                while sink.disconnects < 3 * limit:
                    await source.feed(20, batch=20)
                    await anyio.sleep(0.003)  # feeding pace while the condition is polled
            source.sender.close()
        peers.cancel_scope.cancel()
    listener.close()
    lines = run.stats.attached
    assert sink.connects >= 3 * limit and sink.disconnects >= 3 * limit
    assert len(lines) == limit + 1, lines
    assert "further connection changes are counted, not reported" in lines[limit - 1]
    assert f"{sink.connects} connections, {sink.disconnects} lost" in lines[-1]
    stats = run.stats.stages[-1]
    assert stats.received == source.sent == sink.delivered + stats.dropped_total
