"""Reading records other flowtrace agents published to NATS JetStream.

``nats_source(url, subject, durable=...)`` is a source over a durable
JetStream pull consumer, acknowledging a message only once what it became
has reached the sink; see :class:`NatsSource`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from flowtrace.context import SourceContext
from flowtrace.records import CountTable, Histogram, Receipt, WindowResult
from flowtrace.schema import SCHEMA_VERSION
from flowtrace.sinks.nats import HEADER_ENCODING, HEADER_HOST, NatsTarget
from flowtrace.stages import Emit, Source

__all__ = ["NatsSource", "RemoteRecord", "nats_source"]

_RESULTS: dict[str, type[Any]] = {
    "histogram": Histogram,
    "count_table": CountTable,
    "window": WindowResult,
}


class RemoteRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A record of a type this collector does not decode (an agent's events,
    its reports): its schema ``type`` and ``name``, the host that sent it,
    and its ``data`` as plain JSON values."""

    kind: ClassVar[str] = "remote"
    type: str
    name: str | None
    host: str | None
    data: Any


class _Envelope(msgspec.Struct):
    v: int
    type: str
    data: msgspec.Raw
    name: str | None = None


class NatsSource(Source[Any]):
    """Emits the records published on ``subject`` (wildcards allowed:
    ``flowtrace.>``, ``flowtrace.*.disk_requests``), read through the durable
    JetStream consumer ``durable`` of the stream capturing the subject
    (created when missing: explicit acks, from the stream's first message,
    ``ack_wait`` seconds before an unacknowledged message is delivered
    again, at most ``max_ack_pending`` unacknowledged).

    Records: mergeable results (``histogram``, ``count_table``, ``window``)
    decoded into their types (with the ``hosts`` and wall-clock bounds the
    agent's sink set); any other record as a :class:`RemoteRecord`. A
    message that is not a schema v1 record is counted as dropped
    (``bad_record``) and acknowledged, so it does not come back.

    Acknowledgement follows delivery: after each batch the source emits a
    :class:`~flowtrace.records.Receipt`; the run carries it behind what the
    batch became, holds it in operators that still keep the batch's
    records (``merge_by`` releases it when the windows they went into are
    emitted) and notes it when the sink has written everything before it.
    Only then are the batch's messages acknowledged (``ack_sync``, waiting
    for the server's confirmation). So a collector killed at any moment has
    acknowledged nothing that is not in its sink; its successor on the same
    durable consumer gets every other message again once ``ack_wait``
    passes. While a message waits for its receipt the source tells the
    server it is in progress every ``ack_wait / 3`` seconds, so it is not
    redelivered meanwhile; a message delivered again while still held here
    is not emitted twice (counted in :attr:`redelivered`).

    A collector may start first: while no stream captures the subject it
    says so once and tries again every second.

    Stop: the source stops fetching, ends its output so operators emit what
    they hold, waits up to ``drain_timeout`` seconds for the last receipt
    to reach the sink, acknowledges, and closes the connection.

    Bounds: at most ``batch`` messages per fetch, and ``max_ack_pending``
    held unacknowledged (the server delivers no more until some are
    acknowledged). Counters: ``received`` counts records emitted;
    :attr:`acked` messages acknowledged. Connection loss is survived by the
    client's own reconnection (to any server of the cluster). Needs the
    asyncio event loop.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        subject: str | None = None,
        *,
        durable: str,
        stream: str | None = None,
        batch: int = 1000,
        ack_wait: float = 30.0,
        max_ack_pending: int = 100_000,
        drain_timeout: float = 4.0,
        name: str = "nats",
    ) -> None:
        target = NatsTarget.parse([servers] if isinstance(servers, str) else list(servers))
        subject = subject or target.subject
        if not subject:
            raise ValueError("nats_source needs a subject, e.g. flowtrace.>")
        if not durable or any(c in durable for c in ".*> "):
            raise ValueError(f"bad durable name {durable!r}: letters, digits, - and _")
        if batch < 1 or ack_wait <= 0 or max_ack_pending < batch:
            raise ValueError("need batch >= 1, ack_wait > 0 and max_ack_pending >= batch")
        self.servers = target.servers
        self.subject = subject
        self.durable = durable
        self.stream = stream
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.drain_timeout = drain_timeout
        self.name = name

    def describe(self) -> list[str]:
        return [
            f"source {self.name}: {self.subject} from JetStream consumer {self.durable}"
            f" on {', '.join(self.servers)}"
        ]

    async def run(self, ctx: SourceContext, emit: Emit[Any]) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the NATS source needs the asyncio event loop (nats-py is asyncio only)"
            ) from None
        self.acked = 0
        """Messages acknowledged to JetStream."""
        self.redelivered = 0
        """Messages delivered again while still held here (not emitted twice)."""
        nc = await nats.connect(
            servers=list(self.servers),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2.0,
            error_cb=_quiet,
        )
        try:
            js = nc.jetstream(timeout=5.0)
            config = ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=self.max_ack_pending,
                filter_subject=self.subject,
            )
            ctx.ready()
            sub = await self._subscribe(ctx, js, config)
            if sub is not None:
                ctx.report(f"reading {self.subject} as consumer {self.durable}")
                await self._consume(ctx, emit, sub)
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def _subscribe(self, ctx: SourceContext, js: Any, config: ConsumerConfig) -> Any:
        """The pull subscription; while no stream captures the subject yet
        (no agent has published) or JetStream has no leader, try again every
        second until stopped (None then)."""
        told = False
        while not ctx.stop_requested:
            try:
                return await js.pull_subscribe(
                    self.subject, durable=self.durable, stream=self.stream, config=config
                )
            except nats.js.errors.NotFoundError:
                why = f"no stream captures {self.subject} yet"
            except (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError) as exc:
                why = f"JetStream not ready: {exc or type(exc).__name__}"
            if not told:
                ctx.report(f"{why}; trying again every second")
                told = True
            await ctx.sleep(1.0)
        return None

    async def _consume(self, ctx: SourceContext, emit: Emit[Any], sub: Any) -> None:
        name = ctx.stats.name
        held: dict[int, Msg] = {}  # stream sequence -> message, not yet acknowledged
        batches: deque[tuple[int, list[Msg]]] = deque()
        token = 0
        decoder = msgspec.json.Decoder(_Envelope)
        msgpack = msgspec.msgpack.Decoder(_Envelope)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._acknowledge, ctx, batches, held)
            while not ctx.stop_requested:
                token = await self._fetch(ctx, emit, sub, held, batches, token, decoder, msgpack)
            ctx.close_output()
            with anyio.move_on_after(self.drain_timeout):
                # the run's receipts are plain counters: poll them
                while batches and ctx.pipeline.receipts.get(name, 0) < token:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._ack_delivered(ctx, batches, held)

    async def _acknowledge(
        self, ctx: SourceContext, batches: deque[tuple[int, list[Msg]]], held: dict[int, Msg]
    ) -> None:
        """Acknowledge batches as soon as their receipt reaches the sink (the
        receipts are counters: looked at every 5 ms), and keep the held ones
        from being redelivered meanwhile."""
        touched = time.monotonic()
        while True:
            await self._ack_delivered(ctx, batches, held)
            if held and time.monotonic() - touched > self.ack_wait / 3:
                touched = time.monotonic()
                await _in_progress(list(held.values()))
            await asyncio.sleep(0.005)

    async def _fetch(
        self,
        ctx: SourceContext,
        emit: Emit[Any],
        sub: Any,
        held: dict[int, Msg],
        batches: deque[tuple[int, list[Msg]]],
        token: int,
        decoder: msgspec.json.Decoder[_Envelope],
        msgpack: msgspec.msgpack.Decoder[_Envelope],
    ) -> int:
        """Fetch one batch and emit it with its receipt; returns the last token."""
        try:
            messages = await sub.fetch(self.batch, timeout=0.25)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return token
        except (nats.errors.Error, nats.js.errors.Error):
            await ctx.sleep(0.25)  # reconnecting, or no leader yet: try again
            return token
        fresh = []
        for msg in messages:
            seq = msg.metadata.sequence.stream
            if seq in held:
                self.redelivered += 1
            else:
                held[seq] = msg
                fresh.append(msg)
        if not fresh:
            return token
        records = []
        for msg in fresh:
            record = _decode(msg, decoder, msgpack)
            if record is None:
                ctx.stats.drop("bad_record", 1)
            else:
                records.append(record)
        token += 1
        batches.append((token, fresh))
        ctx.stats.received += len(records)
        records.append(Receipt(source=ctx.stats.name, token=token))
        await emit(records)
        return token

    async def _ack_delivered(
        self, ctx: SourceContext, batches: deque[tuple[int, list[Msg]]], held: dict[int, Msg]
    ) -> None:
        """Acknowledge the batches whose receipt reached the sink."""
        reached = ctx.pipeline.receipts.get(ctx.stats.name, 0)
        due: list[Msg] = []
        while batches and batches[0][0] <= reached:
            due.extend(batches.popleft()[1])
        if not due:
            return
        acks = (m.ack_sync(timeout=5.0) for m in due)
        with anyio.CancelScope(shield=True):  # a stop waits for acks under way
            results = await asyncio.gather(*acks, return_exceptions=True)
        failed = []
        for msg, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(msg)
            else:
                self.acked += 1
                del held[msg.metadata.sequence.stream]
        if failed:  # try again with the next batch (the server may be moving leaders)
            batches.appendleft((reached, failed))


def _decode(msg: Msg, json: msgspec.json.Decoder[_Envelope], msgpack: Any) -> Any | None:
    headers = msg.headers or {}
    try:
        if headers.get(HEADER_ENCODING) == "msgpack":
            envelope = msgpack.decode(msg.data)
            data_decode: Any = msgspec.msgpack.decode
        else:
            envelope = json.decode(msg.data)
            data_decode = msgspec.json.decode
        if envelope.v != SCHEMA_VERSION:
            return None
        result_type = _RESULTS.get(envelope.type)
        if result_type is not None:
            return data_decode(envelope.data, type=result_type)
        return RemoteRecord(
            type=envelope.type,
            name=envelope.name,
            host=headers.get(HEADER_HOST),
            data=data_decode(envelope.data),
        )
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _in_progress(messages: list[Msg]) -> None:
    await asyncio.gather(*(m.in_progress() for m in messages), return_exceptions=True)


async def _quiet(exc: Exception) -> None:
    """Connection errors: the client reconnects by itself; fetches time out meanwhile."""


def nats_source(
    url: str | Sequence[str],
    subject: str | None = None,
    *,
    durable: str,
    stream: str | None = None,
    batch: int = 1000,
    ack_wait: float = 30.0,
    max_ack_pending: int = 100_000,
    name: str = "nats",
) -> NatsSource:
    """Records published to NATS JetStream on ``subject`` (or the subject in
    ``url``: ``nats://HOST:PORT/flowtrace.>``), read through the durable
    consumer ``durable``; see :class:`NatsSource`."""
    return NatsSource(
        url,
        subject,
        durable=durable,
        stream=stream,
        batch=batch,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        name=name,
    )

