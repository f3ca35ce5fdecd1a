"""Forwarding records to a peer over TCP, UDP, or Unix stream/datagram sockets."""

from __future__ import annotations

import bisect
import errno
import itertools
import math
import random
import struct
import time
from collections import deque
from typing import Any

import anyio

from flowtrace.context import StageContext
from flowtrace.schema import RecordEncoder
from flowtrace.sinkspec import SinkSpecError, parse_options
from flowtrace.stages import Sink

from .netio import Address, Connection
from .reporting import Reporter

__all__ = ["SocketSink"]

_REPORTED_CHANGES = 10

Frame = tuple[bytes, int]
"""An encoded record and how many events it carries (0 for a report record)."""


class SocketSink(Sink[Any]):
    """Sends every record to ``address`` in ``framing`` ``"ndjson"`` (one JSON
    line per record) or ``"msgpack"`` (4-byte big-endian length, then msgpack);
    on datagram sockets each record is one datagram.

    Connects at the first batch. While connected, ``write`` returns once the
    kernel took the batch, so a slow peer slows the pipeline (backpressure).
    When the peer is away (refused, closed, reset), records wait in a buffer
    of at most ``buffer`` records; past that the newest are dropped and
    counted as ``dropped["buffer_full"]``. Reconnection is tried when a batch
    arrives after a backoff delay that doubles with each failure from
    ``backoff`` up to ``backoff_max`` seconds, jittered to 50-100 %, and
    reset once records are delivered again.

    Connection changes (connected, peer lost, the first failure to
    reconnect) are reported through the stage context (stderr under the CLI,
    ``attach`` records in files), the first :attr:`reported_changes` of them
    only, so a flapping peer cannot grow the pipeline's report list without
    bound; the last reported line says so. All of them are counted in
    :attr:`connects` and :attr:`disconnects`, and :attr:`state` is the latest;
    if some went unreported, ``close`` reports the totals in one more line.

    Delivery is counted exactly: a TCP record counts as delivered once the
    peer's acknowledgement of all its bytes reached this host (read from the
    kernel, also after a reset), a Unix-socket record once the peer's socket
    accepted it; a record not delivered when the connection fails is sent
    again, whole, after reconnecting (a peer may see its beginning as a broken
    last line). So the peers together get each record whole once, except one
    the peer had read when the connection failed while its acknowledgement
    had not reached this host (a delayed or lost ACK, then a reset): that one
    is sent again and arrives twice, counted once. UDP is best effort: a
    datagram the kernel accepted counts as delivered. What a stream peer
    acknowledged but never read before it exited is beyond any sender's
    view. ``close`` sends what is buffered and waits for acknowledgements
    for up to ``close_timeout`` seconds; records still undelivered then are
    counted as ``dropped["undelivered"]``. Records too large for a datagram
    are ``dropped["too_large"]``, a batch that cannot be encoded
    ``dropped["encode_error"]``. So after close, events received =
    :attr:`delivered` + dropped.
    """

    def __init__(
        self,
        address: str,
        *,
        framing: str = "ndjson",
        buffer: int = 10_000,
        backoff: float = 0.1,
        backoff_max: float = 10.0,
        connect_timeout: float = 5.0,
        close_timeout: float = 5.0,
        reports: bool = True,
        name: str = "socket",
    ) -> None:
        if framing not in ("ndjson", "msgpack"):
            raise ValueError(f"framing must be ndjson or msgpack, not {framing!r}")
        timings = (backoff, backoff_max, connect_timeout, close_timeout)
        if buffer < 1 or not all(math.isfinite(t) and t > 0 for t in timings):
            raise ValueError("need buffer >= 1 and finite, positive times (backoff, timeouts)")
        if backoff_max < backoff:
            raise ValueError("need backoff <= backoff_max")
        self.address = Address.parse(address)
        self.framing = framing
        self.buffer = buffer
        self.backoff, self.backoff_max = backoff, backoff_max
        self.connect_timeout, self.close_timeout = connect_timeout, close_timeout
        self.reports = reports
        self.name = name
        self._encoder = RecordEncoder()

    async def open(self, ctx: StageContext) -> None:
        """Start this run's connection state (nothing connects before the first batch)."""
        await super().open(ctx)
        self.delivered = 0
        """Events the peer has taken (see the class docstring)."""
        self.connects = 0
        """Connections made."""
        self.disconnects = 0
        """Connections lost (peer closed or reset, send failed, interrupted)."""
        self.state = "not connected yet"
        """The latest connection state, as the last change would report it."""
        self._reported = self._unreported = 0
        self._reporter = Reporter(ctx.pipeline)
        self._pending: deque[Frame] = deque()
        self._inflight: deque[tuple[int, Frame]] = deque()  # (end offset in stream, frame)
        self._conn: Connection | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._random = random.Random()

    @classmethod
    def from_spec(cls, argument: str) -> SocketSink:
        """``ADDRESS[,framing=ndjson|msgpack][,buffer=N][,backoff=S][,backoff_max=S]``:
        the constructor's arguments of the same names (``backoff`` and
        ``backoff_max`` in seconds)."""
        address, *rest = argument.split(",")
        if not address:
            raise SinkSpecError("socket needs an address, e.g. --sink socket:tcp://127.0.0.1:9000")
        options = parse_options(
            rest, {"framing": str, "buffer": int, "backoff": float, "backoff_max": float}
        )
        return cls(address, **options)

    reported_changes = _REPORTED_CHANGES
    """How many connection changes are reported (later ones are only counted)."""

    def reports_pipeline(self) -> bool:
        return self.reports

    def _change(self, state: str, *, report: bool = True) -> None:
        """Note a connection change; report it while under the limit."""
        self.state = state
        if not report:
            return
        if self._reported >= self.reported_changes:
            self._unreported += 1
            return
        self._reported += 1
        if self._reported == self.reported_changes:
            state += "; further connection changes are counted, not reported"
        self.ctx.report(state)

    @property
    def buffered(self) -> int:
        """Events held while not yet delivered (buffered or in flight)."""
        return sum(f[1] for f in self._pending) + sum(f[1][1] for f in self._inflight)

    def _frames(self, items: list[Any], events: int) -> list[Frame]:
        if self.framing == "ndjson":
            return [(self._encoder.json_line(i), events) for i in items]
        bodies = [self._encoder.msgpack(i) for i in items]
        return [(struct.pack(">I", len(b)) + b, events) for b in bodies]

    async def write(self, batch: list[Any]) -> None:
        """Queue the due report records and ``batch``, then send what the peer
        takes. A batch that cannot be encoded is counted as
        ``dropped["encode_error"]`` (none of it is sent) and the error raised."""
        due = self._reporter.due() if self.reports else []
        try:
            frames = self._frames(due, 0) + self._frames(batch, 1)
        except Exception:
            self.ctx.stats.drop("encode_error", len(batch))
            raise
        self._pending.extend(frames)
        if self._conn is None and time.monotonic() >= self._next_attempt:
            await self._connect()
        if self._conn is not None:
            await self._flush()
        self._trim()

    async def close(self) -> None:
        if self.reports:
            self._pending.extend(self._frames(self._reporter.final(), 0))
            self._trim()
        with anyio.move_on_after(self.close_timeout):
            while self._pending or self._inflight:
                if self._conn is None:
                    await anyio.sleep(max(0.0, self._next_attempt - time.monotonic()))
                    await self._connect()
                    continue
                await self._flush()
                self._settle()
                if self._inflight:
                    await anyio.sleep(0.01)  # acknowledgements are on their way
        self._settle()
        left = self.buffered
        self.ctx.stats.drop("undelivered", left)
        self._pending.clear()
        self._inflight.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._unreported:
            self.ctx.report(
                f"{self.address}: {self.connects} connections, {self.disconnects} lost;"
                f" last: {self.state}"
            )

    async def _connect(self) -> None:
        try:
            self._conn = await Connection.open(self.address, self.connect_timeout)
        except OSError as exc:
            self._failed(f"cannot connect: {exc.strerror or exc}", report=self._failures == 0)
            return
        self.connects += 1
        self._change(f"connected to {self.address}")

    async def _flush(self) -> None:
        """Send what is pending; on failure keep what was not delivered."""
        conn = self._conn
        assert conn is not None
        if conn.peer_closed():
            self._failed("peer closed the connection")
        elif conn.address.stream:
            await self._send_stream(conn)
        else:
            await self._send_datagrams(conn)

    async def _send_stream(self, conn: Connection) -> None:
        frames = list(self._pending)
        self._pending.clear()
        base = conn.sent
        ends = list(itertools.accumulate(len(f[0]) for f in frames))
        try:
            await conn.send(b"".join(f[0] for f in frames))
        except BaseException as exc:
            accepted = conn.sent - base
            whole = bisect.bisect_right(ends, accepted)
            taken = zip(ends[:whole], frames[:whole], strict=True)
            self._inflight.extend((base + e, f) for e, f in taken)
            self._pending.extendleft(reversed(frames[whole:]))
            cut = accepted != (ends[whole - 1] if whole else 0)
            if isinstance(exc, OSError):
                self._failed(f"send failed: {exc.strerror or exc}")
                return
            if cut:  # cancelled mid-record: the stream is broken, start a new one
                self._failed("interrupted mid-record", report=False)
            raise
        self._inflight.extend((base + e, f) for e, f in zip(ends, frames, strict=True))
        self._settle()

    async def _send_datagrams(self, conn: Connection) -> None:
        while self._pending:
            frame = self._pending[0]
            try:
                await conn.send(frame[0])
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    self._failed(f"send failed: {exc.strerror or exc}")
                    return
                self.ctx.stats.drop("too_large", frame[1])
            else:
                self.delivered += frame[1]
                self._failures = 0
            self._pending.popleft()

    def _settle(self) -> None:
        """Count in-flight records the peer has taken as delivered."""
        if self._conn is None:
            return
        taken = self._conn.delivered()
        while self._inflight and self._inflight[0][0] <= taken:
            self.delivered += self._inflight.popleft()[1][1]
            self._failures = 0

    def _failed(self, why: str, *, report: bool = True) -> None:
        if self._conn is not None:
            self.disconnects += 1
            self._settle()
            self._conn.close()
            self._conn = None
            self._pending.extendleft(reversed([frame for _, frame in self._inflight]))
            self._inflight.clear()
        self._failures += 1
        delay = min(self.backoff_max, self.backoff * 2 ** min(self._failures - 1, 30))
        self._next_attempt = time.monotonic() + delay * self._random.uniform(0.5, 1.0)
        held = f"{self.buffered} events held, up to {self.buffer} records"
        self._change(f"{self.address}: {why}; buffering ({held})", report=report)

    def _trim(self) -> None:
        """Drop the newest records past the bound, counting their events."""
        while len(self._pending) > self.buffer:
            self.ctx.stats.drop("buffer_full", self._pending.pop()[1])
