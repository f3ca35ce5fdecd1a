"""Running a pipeline: one :class:`Run` per execution of a plan.

A run makes fresh stage objects from the plan (``stage.fresh()``) and fresh
counters (and its own copy of a replay's virtual clock; other clocks are the
plan's), then starts one task per stage inside the caller's event loop
(asyncio or trio, through anyio), connected by bounded memory streams that
carry batches. Nothing of a run stays in the plan, so
one plan runs any number of times, in a row or at once.

Edges: each holds at most ``capacity`` batches. With ``Overflow.BLOCK`` (the
default) a full edge makes the upstream stage wait, so pressure propagates to
the source, whose kernel buffer then fills and counts what it cannot take.
With ``Overflow.DROP`` a batch that does not fit is dropped and counted as
``dropped["overflow"]`` on the upstream stage.

Sinks and operators are opened once the source says it is producing (its
probes are attached), so a header a sink prints is true when it appears,
and a ``duration`` counts from then.

Stopping: :meth:`Run.stop` asks the source to stop; it detaches its probes
at once (whatever the stages after it are doing), emits what it has already
read and returns; every operator then sees the end of its input, emits what
``finish()`` returns, and the sink is closed. All that has a deadline:
``drain_timeout`` seconds after the stop (5 by default) whatever has not
finished is cancelled, and what was read but not delivered by then is counted
as dropped (``stop_deadline``) at the stage that held it; a sink's ``close``
gets as long again. Cancelling the run (a second Ctrl-C) counts the same way.

This module knows stages only by the protocols below, so it depends on
nothing that composes them (:mod:`flowtrace.stages` builds on it).
"""

from __future__ import annotations

import enum
import itertools
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Protocol, cast

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .clock import Clock, ReplayClock, TickSchedule
from .context import SourceContext, StageContext
from .errors import StageError
from .records import Receipt
from .routing import process_batch, records_in, route_side_records, take_receipt
from .stats import PipelineStats, StageStats

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["DRAIN_TIMEOUT", "Overflow", "Run"]

DRAIN_TIMEOUT = 5.0
"""Seconds a stopped run may take to drain before what is left is cut off."""

Batch = list[Any]
EmitBatch = Callable[[Batch], Awaitable[None]]


class Overflow(enum.Enum):
    """What an edge does with a batch when it is full."""

    BLOCK = "block"
    """Wait until downstream takes a batch (backpressure)."""
    DROP = "drop"
    """Drop the batch and count it as dropped on the upstream stage."""


class SourceStage(Protocol):
    """What a run needs of a source (see :class:`flowtrace.stages.Source`)."""

    def stage_name(self) -> str: ...
    def fresh(self) -> SourceStage: ...
    async def run(self, ctx: SourceContext, emit: EmitBatch) -> None: ...


class OperatorStage(Protocol):
    """What a run needs of an operator (see :class:`flowtrace.stages.Operator`)."""

    tick_interval: float | None
    pipeline_stop_requested: bool

    @property
    def runs_as_task(self) -> bool: ...
    @property
    def accepts_side_records(self) -> bool: ...
    @property
    def holds_events(self) -> bool: ...

    def stage_name(self) -> str: ...
    def fresh(self) -> OperatorStage: ...
    def open(self, ctx: StageContext) -> None: ...
    def process(self, batch: Batch) -> Sequence[Any]: ...
    def tick(self) -> Sequence[Any]: ...
    def finish(self) -> Sequence[Any]: ...
    def close(self) -> None: ...


class TaskOperatorStage(OperatorStage, Protocol):
    """An operator with ``runs_as_task`` (see :class:`flowtrace.stages.AsyncOperator`)."""

    async def setup(self) -> None: ...
    async def run(self, batches: AsyncIterator[Batch], emit: EmitBatch) -> None: ...
    async def teardown(self) -> None: ...


class SinkStage(Protocol):
    """What a run needs of a sink (see :class:`flowtrace.stages.Sink`)."""

    def stage_name(self) -> str: ...
    def fresh(self) -> SinkStage: ...
    async def open(self, ctx: StageContext) -> None: ...
    async def write(self, batch: Batch) -> None: ...
    async def close(self) -> None: ...


class Placed(Protocol):
    """Where a plan's stages run: the source a run starts, whose program
    runs the first ``in_kernel`` operators (see :mod:`flowtrace.placement`)."""

    @property
    def source(self) -> SourceStage: ...
    @property
    def in_kernel(self) -> int: ...


class Plan(Protocol):
    """What a run is made from (see :class:`flowtrace.stages.Pipeline`)."""

    def placement(self) -> Placed: ...

    @property
    def source(self) -> SourceStage: ...
    @property
    def operators(self) -> Sequence[OperatorStage]: ...
    @property
    def sink(self) -> SinkStage: ...
    @property
    def capacity(self) -> int: ...
    @property
    def overflow(self) -> Overflow: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def name(self) -> str: ...
    @property
    def latency(self) -> float | None: ...


class _Edge:
    """A bounded stream of batches between two stages, with its overflow policy.

    Counts exactly: the upstream stage's ``emitted`` grows by what the edge
    took, the downstream stage's ``received`` by what it handed on
    (:meth:`took`); what is between the two when a run is cut short is
    counted by :meth:`count_abandoned`.
    """

    def __init__(
        self, capacity: int, overflow: Overflow, upstream: StageStats, downstream: StageStats
    ) -> None:
        self.send_stream: MemoryObjectSendStream[Batch]
        self.receive_stream: MemoryObjectReceiveStream[Batch]
        self.send_stream, self.receive_stream = anyio.create_memory_object_stream[Batch](capacity)
        self._overflow = overflow
        self._upstream = upstream
        self._downstream = downstream
        self._last_taken: Batch | None = None

    async def send(self, batch: Batch) -> None:
        """Pass ``batch`` on under the edge's policy; always yields to the
        event loop once, so a producer that never waits cannot starve others.
        Cancelled while waiting for room, the batch counts as dropped
        (``stop_deadline``) unless the downstream stage took it meanwhile."""
        if not batch:
            return
        try:
            self.send_stream.send_nowait(batch)
        except anyio.WouldBlock:
            if self._overflow is Overflow.DROP:
                # a receipt dropped with its batch is not missed: the next one
                # vouches for everything before it too
                self._upstream.drop("overflow", records_in(batch))
                await anyio.lowlevel.checkpoint()
                return
            try:
                await self.send_stream.send(batch)
            except anyio.get_cancelled_exc_class():
                if self._last_taken is batch:
                    self._upstream.emitted += records_in(batch)
                else:
                    self._upstream.drop("stop_deadline", records_in(batch))
                raise
            self._upstream.emitted += records_in(batch)
        else:
            self._upstream.emitted += records_in(batch)
            await anyio.lowlevel.checkpoint()

    def took(self, batch: Batch) -> Batch:
        """Count ``batch`` as received downstream (called as it is received,
        with no await in between); returns it."""
        self._downstream.received += records_in(batch)
        self._last_taken = batch
        return batch

    def count_abandoned(self) -> None:
        """Count what the edge still held when the run was cut short as
        received and dropped (``stop_deadline``) by the downstream stage."""
        held = self._upstream.emitted - self._downstream.received
        if held > 0:
            self._downstream.received += held
            self._downstream.drop("stop_deadline", held)

    def close(self) -> None:
        self.send_stream.close()


class Run:
    """One execution of a plan: its own stage objects and counters.

    Made by :meth:`flowtrace.Pipeline.run` (which hands it to
    ``task_group.start`` callers) or directly as ``Run(pipeline)`` when the
    caller wants the handle before it starts (to stop it from a signal
    handler). :attr:`stats` are live while it runs; :meth:`stop` ends it
    gracefully; :attr:`source`, :attr:`operators` and :attr:`sink` are this
    run's stage objects. A run runs once.

    Operators the plan places in the source's BPF program (its first
    :attr:`in_kernel` ones) are not run here: the source runs them and keeps
    their counters in :attr:`stats` up to date, so the stats still list
    every stage of the plan; :attr:`operators` are those that run in Python.
    """

    def __init__(self, plan: Plan, *, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        if not drain_timeout > 0:
            raise ValueError(f"drain_timeout must be a positive number of seconds: {drain_timeout}")
        self.drain_timeout = drain_timeout
        placed = plan.placement()
        self.in_kernel = placed.in_kernel
        self.source = placed.source.fresh()
        self.operators = tuple(op.fresh() for op in plan.operators[self.in_kernel :])
        self.sink = plan.sink.fresh()
        kernel_names = [op.stage_name() for op in plan.operators[: self.in_kernel]]
        clock = plan.clock
        self.clock: Clock = clock.fresh() if isinstance(clock, ReplayClock) else clock
        self.capacity = plan.capacity
        self.overflow = plan.overflow
        self.latency = plan.latency
        names = [
            self.source.stage_name(),
            *kernel_names,
            *(op.stage_name() for op in self.operators),
            self.sink.stage_name(),
        ]
        self.stats = PipelineStats([StageStats(n) for n in _unique(names)], name=plan.name)
        self._source_ctx: SourceContext | None = None
        self._stopping: anyio.Event | None = None
        self._stop_early = False
        self._started = False

    def stop(self) -> None:
        """Ask the run to finish: stop the source (probes detach at once),
        drain, flush, close; within ``drain_timeout`` seconds."""
        self._stop_early = True
        if self._source_ctx is not None:
            self._source_ctx.request_stop()
        if self._stopping is not None:
            self._stopping.set()

    async def run(
        self,
        *,
        duration: float | None = None,
        report: Callable[[str], None] | None = None,
        task_status: TaskStatus[Run] = anyio.TASK_STATUS_IGNORED,
    ) -> PipelineStats:
        """Run to completion: until the source ends, :meth:`stop` is called, or
        ``duration`` seconds pass. Returns the final counters.

        ``report`` receives informational lines (how each probe attached).
        Started with ``await task_group.start(run.run)``, it returns this run
        to the caller once the source is producing (probes attached).
        Raises :class:`StageError` naming the first stage that failed; every
        probe is detached before it propagates.
        """
        if self._started:
            raise RuntimeError("a run runs once; start another run of the pipeline")
        self._started = True
        stats = self.stats.stages

        def tell(line: str) -> None:
            self.stats.attached.append(line)
            if report is not None:
                report(line)

        kernel = self.in_kernel
        source_ctx = SourceContext(
            stats[0], self.clock, tell, self.stats, stats[1 : kernel + 1], self.latency
        )
        self._source_ctx = source_ctx
        self._stopping = anyio.Event()
        if self._stop_early:
            self.stop()
        # the source's output leaves from the last stage its program runs
        edges = [
            _Edge(self.capacity, self.overflow, up, down)
            for up, down in itertools.pairwise(stats[kernel:])
        ]
        try:
            async with anyio.create_task_group() as outer:
                if duration is not None:
                    outer.start_soon(self._stop_after, duration, source_ctx)
                async with anyio.create_task_group() as tg:
                    outer.start_soon(self._cut_off_after_stop, tg.cancel_scope, tell)
                    tg.start_soon(self._run_source, source_ctx, edges[0])
                    for i, op in enumerate(self.operators):
                        ctx = StageContext(stats[kernel + i + 1], self.clock, tell, self.stats)
                        tg.start_soon(
                            self._run_operator, op, ctx, edges[i], edges[i + 1], source_ctx
                        )
                    sink_ctx = StageContext(stats[-1], self.clock, tell, self.stats)
                    tg.start_soon(self._run_sink, sink_ctx, edges[-1], source_ctx)
                    await source_ctx.wait_ready()
                    task_status.started(self)
                outer.cancel_scope.cancel()
        except Exception as exc:
            failures = _stage_errors(exc)
            if failures:
                raise failures[0] from failures[0].__cause__
            raise
        finally:
            for edge in edges:
                edge.count_abandoned()
        return self.stats

    async def _stop_after(self, seconds: float, source_ctx: SourceContext) -> None:
        await source_ctx.wait_ready()  # a duration counts from when probes are attached
        await anyio.sleep(seconds)
        self.stop()

    async def _cut_off_after_stop(
        self, stages: anyio.CancelScope, tell: Callable[[str], None]
    ) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        await anyio.sleep(self.drain_timeout)
        tell(
            f"stopping took longer than {self.drain_timeout:g} s: cutting the run off;"
            " what was not delivered is counted as dropped (stop_deadline)"
        )
        stages.cancel()

    async def _run_source(self, ctx: SourceContext, edge: _Edge) -> None:
        ctx._close_output = edge.close
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
        op: OperatorStage,
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
        held: list[Receipt] = []  # the latest receipt an operator holding events is behind
        try:
            op.open(ctx)
            async with inbox.receive_stream:
                if op.runs_as_task:
                    task = cast(TaskOperatorStage, op)
                    await self._run_task(task, ctx, inbox, outbox, held)
                elif op.tick_interval is None:
                    async for batch in inbox.receive_stream:
                        await outbox.send(process_batch(op, inbox.took(batch), held))
                        self._stop_if_asked(op)
                else:
                    await self._run_ticking(op, ctx, inbox, outbox, held)
            await outbox.send([*op.finish(), *held])
        except Exception as exc:
            raise StageError(ctx.stats.name, exc) from exc
        finally:
            outbox.close()
            op.close()

    def _stop_if_asked(self, op: OperatorStage) -> None:
        if op.pipeline_stop_requested:
            self.stop()

    async def _run_task(
        self,
        op: TaskOperatorStage,
        ctx: StageContext,
        inbox: _Edge,
        outbox: _Edge,
        held: list[Receipt],
    ) -> None:
        async def batches() -> AsyncGenerator[Batch, None]:
            async for batch in inbox.receive_stream:
                batch = inbox.took(batch)
                if not op.accepts_side_records:
                    batch, receipt = take_receipt(batch)
                    if receipt is not None:  # sent on after the operator's end
                        held[:] = [receipt]
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
        async for batch in inbox.receive_stream:
            self.stop()
            batch, receipt = take_receipt(inbox.took(batch))
            if receipt is not None:
                held[:] = [receipt]
            ctx.stats.drop("after_operator_end", len(batch))

    async def _run_ticking(
        self,
        op: OperatorStage,
        ctx: StageContext,
        inbox: _Edge,
        outbox: _Edge,
        held: list[Receipt],
    ) -> None:
        schedule = TickSchedule(ctx.clock, op.tick_interval or 0.0)
        while True:
            batch: Batch | None = None
            with anyio.move_on_after(schedule.seconds_left()):
                try:
                    batch = inbox.took(await inbox.receive_stream.receive())
                except anyio.EndOfStream:
                    return
            if batch is not None:
                await outbox.send(process_batch(op, batch, held))
            if schedule.due():
                await outbox.send(list(op.tick()))
            self._stop_if_asked(op)

    async def _run_sink(self, ctx: StageContext, inbox: _Edge, source_ctx: SourceContext) -> None:
        try:
            async with inbox.receive_stream:
                # opened once the source produces: what a sink prints first
                # ("Tracing... Hit Ctrl-C to end.") is true when it appears
                await source_ctx.wait_ready()
                await self.sink.open(ctx)
                try:
                    async for batch in inbox.receive_stream:
                        batch, receipt = take_receipt(inbox.took(batch))
                        if batch:
                            await self._write(ctx, batch)
                        if receipt is not None:  # everything ahead of it is written
                            self.stats.receipts[receipt.source] = receipt.token
                finally:
                    # shielded from cancellation, but not waited for without end
                    with anyio.move_on_after(self.drain_timeout, shield=True):
                        try:
                            await self.sink.close()
                        finally:  # what it dropped while closing is not out
                            ctx.stats.settle_sink()
        except Exception as exc:
            raise StageError(ctx.stats.name, exc) from exc

    async def _write(self, ctx: StageContext, batch: Batch) -> None:
        """Write ``batch``; the sink's out is what it received and did not
        drop (:meth:`StageStats.settle_sink`). A write cut short
        (``stop_deadline``) or failed (``sink_failed``) in which the sink
        counted no drop itself has the whole batch dropped for that reason,
        so in = out + dropped on every exit. An error that says the batch
        was ``handed_on`` (a fan-out gave it to every sink, whose own
        counters say what became of it) drops nothing here."""
        counted = ctx.stats.dropped_total
        try:
            await self.sink.write(batch)
        except anyio.get_cancelled_exc_class():
            ctx.stats.count_failed_write(len(batch), counted, "stop_deadline")
            raise
        except Exception as exc:
            if not getattr(exc, "handed_on", False):
                ctx.stats.count_failed_write(len(batch), counted, "sink_failed")
            raise
        finally:
            ctx.stats.settle_sink()


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
