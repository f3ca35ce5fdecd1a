"""Publishing records to a NATS JetStream stream, acknowledged and de-duplicated.

Shared with the NATS source (:mod:`flowtrace.sources.nats`): server URLs,
subject names, the stream's configuration and the message headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import secrets
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig

from flowtrace.clock import wall_datetime
from flowtrace.context import StageContext
from flowtrace.records import Result
from flowtrace.schema import RecordEncoder
from flowtrace.sinkspec import SinkSpecError, parse_options, parse_seconds
from flowtrace.stages import Sink

__all__ = [
    "HEADER_HOST",
    "HEADER_PIPELINE",
    "HEADER_RUN",
    "HEADER_SEQ",
    "STREAM_LIMITS",
    "NatsSink",
    "NatsTarget",
    "subject_token",
]

HEADER_HOST = "Flowtrace-Host"
HEADER_PIPELINE = "Flowtrace-Pipeline"
HEADER_RUN = "Flowtrace-Run"
HEADER_SEQ = "Flowtrace-Seq"
HEADER_ENCODING = "Flowtrace-Encoding"
MSG_ID = "Nats-Msg-Id"

STREAM_LIMITS = {
    "max_age": 24 * 3600.0,
    "max_bytes": 1 << 30,
    "duplicate_window": 600.0,
}
"""Limits of a stream the sink creates: messages kept 24 hours, at most
1 GiB (the oldest are discarded past either), and message ids remembered
for 10 minutes, so a record resent within 10 minutes of its first
publication is stored once."""


def subject_token(text: str) -> str:
    """``text`` as one NATS subject token: characters that separate tokens
    or are wildcards (``.``, ``*``, ``>``, whitespace) become ``_``."""
    token = re.sub(r"[.*>\s]", "_", text)
    return token or "_"


@dataclass(frozen=True)
class NatsTarget:
    """Servers and an optional subject, from ``nats://HOST:PORT[/SUBJECT]``;
    several servers as ``nats://H1:P1,nats://H2:P2/SUBJECT`` (the subject on
    any one of them)."""

    servers: tuple[str, ...]
    subject: str | None

    @classmethod
    def parse(cls, urls: Sequence[str]) -> NatsTarget:
        """Raises ``ValueError`` naming the expected form."""
        form = "nats://HOST:PORT[/SUBJECT], several servers separated by commas"
        servers: list[str] = []
        subjects = set()
        for url in urls:
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme not in ("nats", "tls") or not parts.hostname or not port:
                raise ValueError(f"bad NATS server {url!r}: use {form}")
            servers.append(f"{parts.scheme}://{parts.netloc}")
            if parts.path.strip("/"):
                subjects.add(parts.path.strip("/"))
        if not servers:
            raise ValueError(f"no NATS server given: use {form}")
        if len(subjects) > 1:
            raise ValueError(f"several subjects given ({', '.join(sorted(subjects))}): give one")
        subject = subjects.pop() if subjects else None
        if subject is not None and (
            any(not t for t in subject.split(".")) or re.search(r"[*>\s]", subject)
        ):
            raise ValueError(f"bad subject {subject!r}: dot-separated tokens, no wildcards")
        return cls(tuple(servers), subject)


def stream_config(name: str, subjects: list[str], replicas: int) -> StreamConfig:
    """The configuration of a stream the sink creates (see :data:`STREAM_LIMITS`)."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        max_age=STREAM_LIMITS["max_age"],
        max_bytes=int(STREAM_LIMITS["max_bytes"]),
        duplicate_window=STREAM_LIMITS["duplicate_window"],
    )


class StreamMissing(SinkSpecError):
    """No stream captures the subject and the sink was told not to create one."""


@dataclass
class _Message:
    seq: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    events: int  # records it counts for (1; reports would be 0)


class NatsSink(Sink[Any]):
    """Publishes every record to JetStream, one message per record, and counts
    a record delivered only once JetStream acknowledged storing it.

    ``servers``: URLs ``nats://HOST:PORT`` (a cluster: several; the
    connection goes to one of them and moves on when it fails). The subject
    is ``subject`` or ``flowtrace.<host>.<pipeline>`` (``host`` defaults to
    this machine's name, ``pipeline`` to the run's source name; each made
    one subject token), so a collector subscribes to ``flowtrace.>``,
    ``flowtrace.web1.>`` or ``flowtrace.*.disk_requests``. Payload: the
    record in schema v1 (``framing="ndjson"``: one JSON object, no newline;
    ``"msgpack"``). Headers: ``Nats-Msg-Id: <host>.<run>.<seq>`` (``run``
    is random per run, ``seq`` counts the run's records from 1) and the same
    three parts as ``Flowtrace-Host``, ``Flowtrace-Run``, ``Flowtrace-Seq``,
    plus ``Flowtrace-Pipeline``. Mergeable results
    (:class:`~flowtrace.records.Result`) leave with ``hosts=[host]`` and
    wall-clock window bounds (from the run's clock), unless already set.

    Stream: the first stream capturing the subject. When there is none, the
    sink creates ``stream`` capturing ``flowtrace.>`` with ``replicas``
    copies and the limits of :data:`STREAM_LIMITS`; with
    ``create_stream=False`` it fails instead, in one line.

    Delivery: messages are published without waiting for each other (at
    most ``max_inflight`` awaiting acknowledgement); an acknowledgement
    (``PubAck``) makes the record delivered. A message not acknowledged
    within ``ack_timeout`` seconds, refused by the server, or in flight when
    the connection fails, is published again with the same message id, and
    JetStream stores it once (its de-duplication window is 10 minutes for
    streams the sink creates; a resend acknowledged as a duplicate is
    counted in :attr:`duplicates`). While connected and healthy, ``write``
    waits while more than ``max_inflight`` records are queued (backpressure);
    while servers are unreachable it returns at once and records wait in a
    buffer of at most ``buffer`` records (queued plus unacknowledged); past
    that the newest are dropped and counted as ``dropped["buffer_full"]``.
    Reconnection runs in the background with a delay doubling from
    ``backoff`` to ``backoff_max`` seconds, jittered to 50-100 %, reset by
    the next acknowledgement. ``close`` waits up to ``close_timeout``
    seconds for everything to be acknowledged; what is not is counted as
    ``dropped["undelivered"]``. A record that cannot be encoded is
    ``dropped["encode_error"]`` and fails the run. So after close: records
    received = :attr:`delivered` + dropped, exactly.

    Needs the asyncio event loop (the nats-py client is asyncio only).
    Connection changes are reported through the stage context (stderr under
    the CLI), the first ten only.
    """

    reported_changes = 10

    def __init__(
        self,
        servers: str | Sequence[str],
        subject: str | None = None,
        *,
        stream: str = "FLOWTRACE",
        create_stream: bool = True,
        replicas: int = 1,
        framing: str = "ndjson",
        buffer: int = 100_000,
        max_inflight: int = 1000,
        backoff: float = 0.1,
        backoff_max: float = 5.0,
        ack_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        close_timeout: float = 10.0,
        host: str | None = None,
        pipeline: str | None = None,
        name: str = "nats",
    ) -> None:
        target = NatsTarget.parse([servers] if isinstance(servers, str) else list(servers))
        if framing not in ("ndjson", "msgpack"):
            raise ValueError(f"framing must be ndjson or msgpack, not {framing!r}")
        if buffer < 1 or max_inflight < 1 or replicas < 1:
            raise ValueError("need buffer >= 1, max_inflight >= 1 and replicas >= 1")
        times = (backoff, backoff_max, ack_timeout, connect_timeout, close_timeout)
        if not (0 < backoff <= backoff_max and ack_timeout > 0 and close_timeout >= 0) or not all(
            math.isfinite(t) for t in times
        ):
            raise ValueError(
                "need 0 < backoff <= backoff_max, ack_timeout > 0, close_timeout >= 0,"
                " all finite"
            )
        self.servers = target.servers
        self.subject = subject or target.subject
        self.stream = stream
        self.create_stream = create_stream
        self.replicas = replicas
        self.framing = framing
        self.buffer = buffer
        self.max_inflight = max_inflight
        self.backoff, self.backoff_max = backoff, backoff_max
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.host = host or socket.gethostname()
        self.pipeline = pipeline
        self.name = name

    @classmethod
    def from_spec(cls, argument: str) -> NatsSink:
        """``nats://HOST:PORT[/SUBJECT][,nats://HOST:PORT...][,OPTION=VALUE...]``
        with options ``stream``, ``create`` (yes/no), ``replicas``,
        ``framing``, ``buffer``, ``max_inflight``, ``backoff``,
        ``backoff_max``, ``ack_timeout``, ``close_timeout``, ``host``,
        ``pipeline``: the constructor's arguments (``create`` is ``create_stream``)."""
        parts = [p for p in argument.split(",") if p]
        urls = [p for p in parts if "://" in p]
        if not urls:
            raise SinkSpecError(
                "nats needs a server, e.g. --sink nats:nats://127.0.0.1:4222/flowtrace.web1.disk"
            )
        options = parse_options(
            [p for p in parts if "://" not in p],
            {
                "stream": str,
                "create": _yes_no,
                "replicas": int,
                "framing": str,
                "buffer": int,
                "max_inflight": int,
                "backoff": parse_seconds,
                "backoff_max": parse_seconds,
                "ack_timeout": parse_seconds,
                "close_timeout": parse_seconds,
                "host": str,
                "pipeline": str,
            },
        )
        if "create" in options:
            options["create_stream"] = options.pop("create")
        return cls(urls, **options)

    def describe_subject(self, pipeline: str) -> str:
        """The subject records go to when the run's pipeline is ``pipeline``."""
        if self.subject:
            return self.subject
        return f"flowtrace.{subject_token(self.host)}.{subject_token(self.pipeline or pipeline)}"

    async def open(self, ctx: StageContext) -> None:
        """Start this run: its id, counters, and the background publisher
        (which connects at once and keeps reconnecting)."""
        await super().open(ctx)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the NATS sink needs the asyncio event loop (nats-py is asyncio only);"
                " run the pipeline with anyio's asyncio backend"
            ) from None
        self.delivered = 0
        """Records JetStream acknowledged."""
        self.duplicates = 0
        """Resends JetStream acknowledged as already stored (counted once in delivered)."""
        self.connects = 0
        self.disconnects = 0
        self.state = "not connected yet"
        self.run_id = secrets.token_hex(6)
        chain = ctx.pipeline.chain
        self._subject = self.describe_subject(chain[0].name if chain else "pipeline")
        self._encoder = RecordEncoder()
        self._json = msgspec.json.Encoder()
        self._seq = 0
        self._queue: deque[_Message] = deque()
        self._inflight: dict[int, tuple[_Message, asyncio.Future[PubAck]]] = {}
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_checked = False
        self._healthy = False
        self._failures = 0
        self._reported = 0
        self._random = random.Random()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._drained = asyncio.Event()
        self._fatal: BaseException | None = None
        self._task = loop.create_task(self._publisher())

    @property
    def buffered(self) -> int:
        """Records not yet acknowledged (queued or in flight)."""
        return len(self._queue) + len(self._inflight)

    async def write(self, batch: list[Any]) -> None:
        """Queue ``batch``; wait while the queue is full and the link healthy."""
        self._raise_fatal()
        try:
            messages = [self._message(item) for item in batch]
        except Exception:
            self.ctx.stats.drop("encode_error", len(batch))
            raise
        self._queue.extend(messages)
        over = self.buffered - self.buffer
        if over > 0:
            for _ in range(min(over, len(self._queue))):
                self.ctx.stats.drop("buffer_full", self._queue.pop().events)
        self._wake.set()
        while self._healthy and len(self._queue) > self.max_inflight:
            self._room.clear()
            await self._room.wait()
            self._raise_fatal()

    async def close(self) -> None:
        """Wait up to ``close_timeout`` s for acknowledgements; count the rest
        as ``dropped["undelivered"]``; close the connection."""
        self._closing = True
        self._wake.set()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.close_timeout)
        finally:  # also when the run cuts the close short: count, then let go
            self._task.cancel()
            queued = [*self._queue, *(m for m, _ in self._inflight.values())]
            self.ctx.stats.drop("undelivered", sum(m.events for m in queued))
            self._queue.clear()
            self._inflight.clear()
            self.ctx.report(
                f"{self.delivered} records acknowledged by JetStream on {self._subject}"
                f" ({self.duplicates} resends were duplicates; {self.connects} connections)"
            )
        with contextlib.suppress(BaseException):  # cancelled, or kept in _fatal
            await self._task
        await self._disconnect()
        if self._fatal is not None and not isinstance(self._fatal, asyncio.CancelledError):
            raise self._fatal

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _message(self, item: Any) -> _Message:
        self._seq += 1
        if isinstance(item, Result) and item.window_start is not None and item.wall_start is None:
            clock = self.ctx.clock
            item = msgspec.structs.replace(
                item,
                wall_start=wall_datetime(clock, item.window_start),
                wall_end=wall_datetime(clock, item.window_end)
                if item.window_end is not None
                else None,
                hosts=item.hosts or [self.host],
            )
        elif isinstance(item, Result) and item.hosts is None:
            item = msgspec.structs.replace(item, hosts=[self.host])
        if self.framing == "ndjson":
            payload = self._encoder.json_line(item)[:-1]
        else:
            payload = self._encoder.msgpack(item)
        seq = str(self._seq)
        headers = {
            MSG_ID: f"{self.host}.{self.run_id}.{seq}",
            HEADER_HOST: self.host,
            HEADER_RUN: self.run_id,
            HEADER_SEQ: seq,
            HEADER_PIPELINE: self._subject.rsplit(".", 1)[-1],
            HEADER_ENCODING: "json" if self.framing == "ndjson" else "msgpack",
        }
        return _Message(self._seq, self._subject, payload, headers, 1)

    def _change(self, state: str) -> None:
        self.state = state
        if self._reported < self.reported_changes:
            self._reported += 1
            more = "; further changes are counted, not reported"
            self.ctx.report(state + (more if self._reported == self.reported_changes else ""))

    async def _publisher(self) -> None:
        """Connect, publish, collect acknowledgements, resend; until cancelled."""
        try:
            while True:
                disconnected = self._nc is None or not self._nc.is_connected
                if disconnected and not await self._connect():
                    await self._pause()
                    continue
                if not self._queue and not self._inflight:
                    self._room.set()
                    if self._closing:
                        self._drained.set()
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._round()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a fatal error: fail the run at the next write/close
            self._fatal = exc
            self._healthy = False
            self._room.set()
            self._drained.set()

    async def _pause(self) -> None:
        """Wait the backoff delay after a failure (woken early by nothing)."""
        delay = min(self.backoff_max, self.backoff * 2 ** min(self._failures - 1, 30))
        await asyncio.sleep(delay * self._random.uniform(0.5, 1.0))

    def _failed(self, why: str) -> None:
        self._failures += 1
        if self._healthy:
            self._change(f"{why}; buffering up to {self.buffer} records")
        self._healthy = False
        self._room.set()  # writers stop waiting: the buffer bound applies now

    async def _connect(self) -> bool:
        await self._disconnect()
        servers = list(self.servers)
        self._random.shuffle(servers)
        try:
            # one round: each server tried twice at once (nats-py retries 0
            # attempts forever), then NoServersError and the sink's backoff
            nc = await nats.connect(
                servers=servers,
                allow_reconnect=False,
                connect_timeout=self.connect_timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=_quiet,
                disconnected_cb=self._on_disconnect,
                closed_cb=_quiet_closed,
            )
        except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
            if self._failures == 0:
                self._change(f"cannot connect to {', '.join(self.servers)}: {_why(exc)}")
            self._failed("cannot connect")
            return False
        self._nc = nc
        self._js = nc.jetstream(timeout=self.ack_timeout)
        self.connects += 1
        self._change(f"connected to {nc.connected_url.netloc if nc.connected_url else '?'}")
        if not self._stream_checked:
            try:
                await self._ensure_stream()
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as exc:
                self._failed(f"stream check: {_why(exc)}")  # no JetStream leader yet
                return False
        # everything unacknowledged goes out again, same ids, in order
        resend = []
        for message, future in self._inflight.values():
            future.cancel()
            resend.append(message)
        self._inflight.clear()
        self._queue.extendleft(reversed(resend))
        self._healthy = True
        return True

    async def _on_disconnect(self) -> None:
        if self._nc is None:  # our own doing
            return
        self.disconnects += 1
        self._failed("connection lost")

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # closing a broken connection
                await nc.close()

    async def _ensure_stream(self) -> None:
        js = self._js
        assert js is not None
        try:
            await js.find_stream_name_by_subject(self._subject)
        except nats.js.errors.NotFoundError:
            if not self.create_stream:
                raise StreamMissing(
                    f"no JetStream stream captures subject {self._subject!r} on"
                    f" {', '.join(self.servers)}; create one (nats stream add) or let the"
                    " sink create it (drop create=no)"
                ) from None
            try:
                await js.add_stream(stream_config(self.stream, ["flowtrace.>"], self.replicas))
            except nats.js.errors.BadRequestError as exc:
                raise StreamMissing(
                    f"cannot create stream {self.stream!r} for {self._subject!r}: {exc.description}"
                ) from None
            self.ctx.report(
                f"created stream {self.stream} (flowtrace.>, {self.replicas} replica(s),"
                " 24 h, 1 GiB, duplicates detected over 10 min)"
            )
        self._stream_checked = True

    async def _round(self) -> None:
        """Publish what is queued (up to ``max_inflight`` in flight), then wait
        for the acknowledgements of this round, at most ``ack_timeout``."""
        js = self._js
        assert js is not None
        while self._queue and len(self._inflight) < self.max_inflight:
            message = self._queue.popleft()
            try:
                future = await js.publish_async(
                    message.subject, message.payload, headers=dict(message.headers)
                )
            except (nats.errors.Error, OSError) as exc:
                self._queue.appendleft(message)
                self._failed(f"publish failed: {_why(exc)}")
                await self._disconnect()
                return
            self._inflight[message.seq] = (message, future)
        if len(self._queue) <= self.max_inflight:
            self._room.set()
        futures = [f for _, f in self._inflight.values()]
        if not futures:
            return
        await asyncio.wait(futures, timeout=self.ack_timeout)
        retry: list[_Message] = []
        for seq, (message, future) in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[seq]
            if future.cancelled() or future.exception() is not None:
                retry.append(message)
                continue
            ack = future.result()
            self.delivered += message.events
            if ack.duplicate:
                self.duplicates += 1
            self._failures = 0
        if self._inflight:  # no answer in time: publish again, same ids
            for message, future in self._inflight.values():
                future.cancel()
                retry.append(message)
            self._inflight.clear()
        if retry:
            retry.sort(key=lambda m: m.seq)
            self._queue.extendleft(reversed(retry))
            self._failed(f"{len(retry)} records not acknowledged")
            await self._pause()
        elif not self._healthy and self._nc is not None and self._nc.is_connected:
            self._healthy = True
            self._change("delivering again")


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise ValueError(f"{text!r}: write yes or no")


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _quiet(exc: Exception) -> None:
    """nats-py reports connection errors here; the sink reports its own."""


async def _quiet_closed() -> None:
    """Closing is the sink's own doing or follows a reported loss."""
