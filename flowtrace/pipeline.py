"""Composing stages into a pipeline and running it.

``source | operator | ... | sink`` builds a :class:`Pipeline`. Running it
starts one task per stage inside the caller's event loop (asyncio or trio,
through anyio), connected by bounded memory streams that carry batches.

Edges: each holds at most ``capacity`` batches. With ``Overflow.BLOCK`` (the
default) a full edge makes the upstream stage wait, so pressure propagates to
the source, whose kernel buffer then fills and counts what it cannot take.
With ``Overflow.DROP`` a batch that does not fit is dropped and counted as
``dropped["overflow"]`` on the upstream stage.

Stopping: :meth:`Pipeline.stop` asks the source to stop; it detaches its
probes, emits what it has already read and returns; every operator then sees
the end of its input, emits what ``finish()`` returns, and the sink is closed.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any, Generic, TypeVar, overload

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .clock import Clock, MonotonicClock, TickSchedule
from .context import SourceContext, StageContext
from .errors import PipelineDefinitionError, StageError
from .routing import process_batch, route_side_records
from .stages import AsyncOperator, Operator, Sink, Source
from .stats import PipelineStats, StageStats

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Flow", "Overflow", "Pipeline"]

T = TypeVar("T")
U = TypeVar("U")
Batch = list[Any]


class Overflow(enum.Enum):
    """What an edge does with a batch when it is full."""

    BLOCK = "block"
    """Wait until downstream takes a batch (backpressure)."""
    DROP = "drop"
    """Drop the batch and count it as dropped on the upstream stage."""


class Flow(Generic[T]):
    """A source and the operators after it; ``| sink`` makes a Pipeline."""

    def __init__(self, source: Source[Any], operators: Sequence[Operator[Any, Any]]) -> None:
        self.source = source
        self.operators = tuple(operators)

    @overload
    def __or__(self, other: Operator[T, U]) -> Flow[U]: ...
    @overload
    def __or__(self, other: Sink[T]) -> Pipeline: ...
    def __or__(self, other: Operator[T, U] | Sink[T]) -> Flow[U] | Pipeline:
        if isinstance(other, Operator):
            return Flow(self.source, (*self.operators, other))
        if isinstance(other, Sink):
            return Pipeline(self.source, self.operators, other)
        raise PipelineDefinitionError(
            f"cannot pipe into {type(other).__name__}: expected an Operator or a Sink"
        )


class _Edge:
    """A bounded stream of batches between two stages, with its overflow policy."""

    def __init__(self, capacity: int, overflow: Overflow, upstream: StageStats) -> None:
        self.send_stream: MemoryObjectSendStream[Batch]
        self.receive_stream: MemoryObjectReceiveStream[Batch]
        self.send_stream, self.receive_stream = anyio.create_memory_object_stream[Batch](capacity)
        self._overflow = overflow
        self._upstream = upstream

    async def send(self, batch: Batch) -> None:
        """Pass ``batch`` on under the edge's policy; always yields to the
        event loop once, so a producer that never waits cannot starve others."""
        if not batch:
            return
        try:
            self.send_stream.send_nowait(batch)
        except anyio.WouldBlock:
            if self._overflow is Overflow.DROP:
                self._upstream.drop("overflow", len(batch))
                await anyio.lowlevel.checkpoint()
                return
            await self.send_stream.send(batch)
            self._upstream.emitted += len(batch)
        else:
            self._upstream.emitted += len(batch)
            await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        self.send_stream.close()


class Pipeline:
    """A source, operators, and a sink, run as one unit.

    A pipeline runs once. Its :attr:`stats` are live while it runs. The core
    installs no signal handlers and keeps no global state: run it in any
    anyio-compatible event loop, and call :meth:`stop` to end it gracefully.
    """

    def __init__(
        self,
        source: Source[Any],
        operators: Sequence[Operator[Any, Any]],
        sink: Sink[Any],
        *,
        capacity: int = 64,
        overflow: Overflow = Overflow.BLOCK,
        clock: Clock | None = None,
    ) -> None:
        if capacity < 1:
            raise PipelineDefinitionError("edge capacity must be at least one batch")
        self.source = source
        self.operators = tuple(operators)
        self.sink = sink
        self.capacity = capacity
        self.overflow = overflow
        self.clock: Clock = clock or MonotonicClock()
        names = [source.stage_name(), *(op.stage_name() for op in operators), sink.stage_name()]
        self.stats = PipelineStats([StageStats(n) for n in _unique(names)])
        self._source_ctx: SourceContext | None = None
        self._stop_early = False
        self._started = False

    def replace(
        self,
        *,
        source: Source[Any] | None = None,
        sink: Sink[Any] | None = None,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        clock: Clock | None = None,
    ) -> Pipeline:
        """A new, not yet run pipeline with some parts replaced, to run instead
        of this one: the parts not replaced (operators with their state) are
        shared, so the two must not run at the same time."""
        return Pipeline(
            source or self.source,
            self.operators,
            sink or self.sink,
            capacity=capacity or self.capacity,
            overflow=overflow or self.overflow,
            clock=clock or self.clock,
        )

    def stop(self) -> None:
        """Ask the pipeline to finish: stop the source, drain, flush, close."""
        self._stop_early = True
        if self._source_ctx is not None:
            self._source_ctx.request_stop()

    def describe(self) -> list[str]:
        """What would run, without running it (for ``flowtrace explain``)."""
        lines = self.source.describe()
        lines += [f"operator {op.stage_name()}" for op in self.operators]
        lines.append(f"sink {self.sink.stage_name()}")
        return lines

    async def run(
        self,
        *,
        duration: float | None = None,
        report: Callable[[str], None] | None = None,
        task_status: TaskStatus[Pipeline] = anyio.TASK_STATUS_IGNORED,
    ) -> PipelineStats:
        """Run to completion: until the source ends, :meth:`stop` is called, or
        ``duration`` seconds pass. Returns the final counters.

        ``report`` receives informational lines (how each probe attached).
        Started with ``await task_group.start(pipeline.run)``, it returns to
        the caller once the source is producing (probes attached).
        Raises :class:`StageError` naming the first stage that failed; every
        probe is detached before it propagates.
        """
        if self._started:
            raise PipelineDefinitionError("a pipeline runs once; build a new one to run again")
        self._started = True
        stats = self.stats.stages

        def tell(line: str) -> None:
            self.stats.attached.append(line)
            if report is not None:
                report(line)

        source_ctx = SourceContext(stats[0], self.clock, tell)
        self._source_ctx = source_ctx
        if self._stop_early:
            source_ctx.request_stop()
        edges = [_Edge(self.capacity, self.overflow, s) for s in stats[:-1]]
        try:
            async with anyio.create_task_group() as outer:
                if duration is not None:
                    outer.start_soon(self._stop_after, duration)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._run_source, source_ctx, edges[0])
                    for i, op in enumerate(self.operators):
                        ctx = StageContext(stats[i + 1], self.clock, tell)
                        tg.start_soon(
                            self._run_operator, op, ctx, edges[i], edges[i + 1], source_ctx
                        )
                    sink_ctx = StageContext(stats[-1], self.clock, tell)
                    tg.start_soon(self._run_sink, sink_ctx, edges[-1])
                    await source_ctx.wait_ready()
                    task_status.started(self)
                outer.cancel_scope.cancel()
        except Exception as exc:
            failures = _stage_errors(exc)
            if failures:
                raise failures[0] from failures[0].__cause__
            raise
        return self.stats

    async def _stop_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.stop()

    async def _run_source(self, ctx: SourceContext, edge: _Edge) -> None:
        try:
            await self.source.run(ctx, edge.send)
        except Exception as exc:
            raise StageError(ctx.stats.name, exc) from exc
        else:
            ctx.ready()  # a source that ended without saying so
        finally:
            edge.close()

    async def _run_operator(
        self,
        op: Operator[Any, Any],
        ctx: StageContext,
        inbox: _Edge,
        outbox: _Edge,
        source_ctx: SourceContext,
    ) -> None:
        try:
            # opened once the source produces, so processing time (windows,
            # ticks) starts when the probes are attached, not while they compile
            await source_ctx.wait_ready()
        except BaseException:  # the source failed first: close this stage's edges
            inbox.receive_stream.close()
            outbox.close()
            raise
        try:
            op.open(ctx)
            async with inbox.receive_stream:
                if isinstance(op, AsyncOperator):
                    await self._run_async(op, ctx, inbox.receive_stream, outbox)
                elif op.tick_interval is None:
                    async for batch in inbox.receive_stream:
                        ctx.stats.received += len(batch)
                        await outbox.send(process_batch(op, batch))
                        self._stop_if_asked(op)
                else:
                    await self._run_ticking(op, ctx, inbox.receive_stream, outbox)
            await outbox.send(list(op.finish()))
        except Exception as exc:
            raise StageError(ctx.stats.name, exc) from exc
        finally:
            outbox.close()
            op.close()

    def _stop_if_asked(self, op: Operator[Any, Any]) -> None:
        if op.pipeline_stop_requested:
            self.stop()

    async def _run_async(
        self,
        op: AsyncOperator[Any, Any],
        ctx: StageContext,
        inbox: MemoryObjectReceiveStream[Batch],
        outbox: _Edge,
    ) -> None:
        async def batches() -> AsyncGenerator[Batch, None]:
            async for batch in inbox:
                ctx.stats.received += len(batch)
                side, events = route_side_records(op, batch)
                if side:  # sent on ahead; run() never sees them
                    await outbox.send(side)
                if events or not side:
                    yield events

        await op.setup()
        try:
            async with aclosing(batches()) as stream:
                await op.run(stream, outbox.send)
        finally:
            with anyio.CancelScope(shield=True):
                await op.teardown()
        # run() returned: if input is left, the operator ended early; stop the
        # source and drain (counted) so nothing upstream waits forever
        async for batch in inbox:
            self.stop()
            ctx.stats.received += len(batch)
            ctx.stats.drop("after_operator_end", len(batch))

    async def _run_ticking(
        self,
        op: Operator[Any, Any],
        ctx: StageContext,
        inbox: MemoryObjectReceiveStream[Batch],
        outbox: _Edge,
    ) -> None:
        schedule = TickSchedule(ctx.clock, op.tick_interval or 0.0)
        while True:
            batch: Batch | None = None
            with anyio.move_on_after(schedule.seconds_left()):
                try:
                    batch = await inbox.receive()
                except anyio.EndOfStream:
                    return
            if batch is not None:
                ctx.stats.received += len(batch)
                await outbox.send(process_batch(op, batch))
            if schedule.due():
                await outbox.send(list(op.tick()))
            self._stop_if_asked(op)

    async def _run_sink(self, ctx: StageContext, inbox: _Edge) -> None:
        try:
            async with inbox.receive_stream:
                await self.sink.open(ctx)
                try:
                    async for batch in inbox.receive_stream:
                        ctx.stats.received += len(batch)
                        await self.sink.write(batch)
                        ctx.stats.emitted += len(batch)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.sink.close()
        except Exception as exc:
            raise StageError(ctx.stats.name, exc) from exc


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def _stage_errors(exc: BaseException) -> list[StageError]:
    if isinstance(exc, StageError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in _stage_errors(sub)]
    return []
