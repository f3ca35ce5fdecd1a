"""The pipeline runtime on synthetic events: order, counts, stop, overflow,
errors, and embedding under asyncio and trio. No kernel needed."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio
import pytest
import trio

from flowtrace import (
    Emit,
    ManualClock,
    Operator,
    Overflow,
    Pipeline,
    PipelineDefinitionError,
    Run,
    Source,
    SourceContext,
    StageContext,
    StageError,
)
from flowtrace.testing import CollectSink, ListSource

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class Double(Operator[int, int]):
    name = "double"

    def __init__(self) -> None:
        self.closed = False

    def process(self, batch: list[int]) -> Sequence[int]:
        return [2 * x for x in batch]

    def close(self) -> None:
        self.closed = True


class SumAtEnd(Operator[int, int]):
    """Holds a running sum; emits it only at end of stream."""

    def __init__(self) -> None:
        self.total = 0

    def process(self, batch: list[int]) -> Sequence[int]:
        self.total += sum(batch)
        return []

    def finish(self) -> Sequence[int]:
        return [self.total]


class Ticker(Operator[int, str]):
    tick_interval = 0.01

    def process(self, batch: list[int]) -> Sequence[str]:
        return []

    def tick(self) -> Sequence[str]:
        return ["tick"]


class SlowSink(CollectSink[int]):
    async def write(self, batch: list[int]) -> None:
        await anyio.sleep(0.002)  # the sink's own slowness, not a wait for anything
        await super().write(batch)


class Exploding(Operator[int, int]):
    name = "exploding"

    def process(self, batch: list[int]) -> Sequence[int]:
        raise ValueError("bad event")


@pytest.mark.anyio
async def test_events_flow_in_order_through_operators() -> None:
    sink = CollectSink[int]()
    run = Run(ListSource(range(1000), batch_size=7) | Double() | sink)
    stats = await run.run()
    assert sink.items == [2 * x for x in range(1000)]
    assert [(s.name, s.received, s.emitted) for s in stats.stages] == [
        ("list", 1000, 1000),
        ("double", 1000, 1000),
        ("collect", 1000, 1000),
    ]
    double, collect = run.operators[0], run.sink
    assert isinstance(double, Double) and isinstance(collect, CollectSink)
    assert double.closed and collect.closed


@pytest.mark.anyio
async def test_finish_emits_what_an_operator_holds() -> None:
    sink = CollectSink[int]()
    await (ListSource([1, 2, 3, 4]) | SumAtEnd() | sink).run()
    assert sink.items == [10]


@pytest.mark.anyio
async def test_tick_runs_without_events() -> None:
    sink = CollectSink[str]()
    pipeline = ListSource([1], interval=0.2) | Ticker() | sink
    await pipeline.run()
    assert sink.items.count("tick") >= 5


@pytest.mark.anyio
async def test_drop_policy_counts_exactly_what_it_drops() -> None:
    sink = SlowSink()
    pipeline = Pipeline(
        ListSource(range(5000), batch_size=10), [], sink, capacity=1, overflow=Overflow.DROP
    )
    stats = await pipeline.run()
    source = stats.stages[0]
    assert source.dropped["overflow"] > 0
    assert len(sink.items) + source.dropped["overflow"] == 5000
    assert source.emitted == len(sink.items)


@pytest.mark.anyio
async def test_block_policy_loses_nothing() -> None:
    sink = SlowSink()
    stats = await Pipeline(ListSource(range(500), batch_size=10), [], sink, capacity=1).run()
    assert sink.items == list(range(500))
    assert stats.dropped == 0


@pytest.mark.anyio
async def test_failing_stage_is_named_and_everything_closes() -> None:
    run = Run(ListSource(range(10)) | Double() | Exploding() | CollectSink[int]())
    with pytest.raises(
        StageError, match=r"stage 'exploding' failed: ValueError: bad event"
    ) as info:
        await run.run()
    assert info.value.stage == "exploding"
    assert isinstance(info.value.__cause__, ValueError)
    double, sink = run.operators[0], run.sink
    assert isinstance(double, Double) and isinstance(sink, CollectSink)
    assert sink.closed and double.closed


@pytest.mark.anyio
async def test_stop_ends_the_source_and_drains() -> None:
    sink = CollectSink[int]()
    pipeline = ListSource(range(100), batch_size=1, interval=0.01) | SumAtEnd() | sink
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        with anyio.fail_after(10):  # stop mid-stream: once the source has emitted
            while not run.stats.stages[0].emitted:  # noqa: ASYNC110 - polling a counter
                await anyio.sleep(0.001)  # poll interval of this bounded wait
        run.stop()
    received = run.stats.stages[0].received
    assert 0 < received < 100
    assert sink.items == [sum(range(received))]


@pytest.mark.anyio
async def test_duration_stops_the_pipeline() -> None:
    pipeline = ListSource(range(1000), batch_size=1, interval=0.01) | CollectSink[int]()
    with anyio.fail_after(5):
        stats = await pipeline.run(duration=0.1)
    assert 0 < stats.stages[0].received < 1000


@pytest.mark.anyio
async def test_a_run_runs_once() -> None:
    run = Run(ListSource([1]) | CollectSink[int]())
    await run.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await run.run()


def test_piping_into_something_else_is_an_error() -> None:
    with pytest.raises(PipelineDefinitionError, match="expected an Operator or a Sink"):
        ListSource([1]) | print  # type: ignore[operator]


async def _embedded(expected: int) -> int:
    """An application's own task group running a pipeline and reading live counters."""
    sink = CollectSink[int]()
    pipeline = ListSource(range(expected), batch_size=1, interval=0.001) | Double() | sink
    seen_live = 0
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        while run.stats.stages[-1].received < expected:
            seen_live = max(seen_live, run.stats.stages[-1].received)
            await anyio.sleep(0.005)  # poll interval: the counter is watched live
    assert sink.items == [2 * x for x in range(expected)]
    return seen_live


@pytest.mark.asyncio
async def test_embedded_in_asyncio() -> None:
    assert 0 < await _embedded(50) <= 50


def test_embedded_in_trio() -> None:
    assert 0 < trio.run(_embedded, 50) <= 50


class Firehose(Source[int]):
    """Emits forever without ever waiting itself, like a kernel source whose
    buffer never empties."""

    name = "firehose"

    async def run(self, ctx: SourceContext, emit: Emit[int]) -> None:
        ctx.ready()
        while not ctx.stop_requested:
            ctx.stats.received += 10
            await emit(list(range(10)))


@pytest.mark.anyio
async def test_drop_policy_still_lets_stop_and_duration_work() -> None:
    sink = SlowSink()
    pipeline = Pipeline(Firehose(), [], sink, capacity=1, overflow=Overflow.DROP)
    with anyio.fail_after(10):
        stats = await pipeline.run(duration=0.2)
    source = stats.stages[0]
    assert len(sink.items) > 0
    assert source.received == len(sink.items) + source.dropped["overflow"]


class FailsBeforeReady(Source[int]):
    name = "early"

    async def run(self, ctx: SourceContext, emit: Emit[int]) -> None:
        raise OSError("cannot attach")


@pytest.mark.anyio
async def test_start_raises_when_the_source_fails_before_it_is_ready() -> None:
    pipeline = FailsBeforeReady() | CollectSink[int]()
    reached_after_start = False
    with pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            reached_after_start = True
    assert info.group_contains(StageError, match="stage 'early' failed: OSError: cannot attach")
    assert not reached_after_start


class SlowToStart(Source[int]):
    """Takes a while before it is ready, as compiling and attaching does."""

    ready_at = -1.0

    async def run(self, ctx: SourceContext, emit: Emit[int]) -> None:
        await anyio.sleep(0.05)  # the slow start being simulated
        assert isinstance(ctx.clock, ManualClock)
        ctx.clock.advance(5.0)
        type(self).ready_at = ctx.clock.now()
        ctx.ready()
        await emit([1, 2, 3])


class RecordsOpen(Double):
    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self.opened_at = ctx.clock.now()


@pytest.mark.anyio
async def test_operators_open_when_the_source_is_ready() -> None:
    sink = CollectSink[int]()
    run = Run(Pipeline(SlowToStart(), [RecordsOpen()], sink, clock=ManualClock()))
    await run.run()
    operator = run.operators[0]
    assert isinstance(operator, RecordsOpen)
    assert operator.opened_at == SlowToStart.ready_at == 5.0
    assert sink.items == [2, 4, 6]


@pytest.mark.anyio
async def test_a_source_failing_first_leaves_no_stream_open() -> None:
    """Operators waiting for the source close their edges when it fails
    (an unclosed memory stream warns, and warnings are errors here)."""
    pipeline = FailsBeforeReady() | Double() | SumAtEnd() | CollectSink[int]()
    with pytest.raises(StageError, match="stage 'early' failed"):
        await pipeline.run()
    import gc

    gc.collect()



class ReadyWatcher(Source[int]):
    """Registers one callback before saying it is ready and one after."""

    def __init__(self, heard: list[str]) -> None:
        self.heard = heard

    async def run(self, ctx: SourceContext, emit: Emit[int]) -> None:
        ctx.call_on_ready(lambda: self.heard.append("before"))
        assert self.heard == []
        ctx.ready()
        assert self.heard == ["before"]
        ctx.call_on_ready(lambda: self.heard.append("after"))
        assert self.heard == ["before", "after"]
        ctx.ready()  # a second ready calls nothing again
        await emit([1])


@pytest.mark.anyio
async def test_call_on_ready_runs_each_callback_once_at_ready() -> None:
    heard: list[str] = []
    sink = CollectSink[int]()
    await Run(ReadyWatcher(heard) | sink).run()
    assert heard == ["before", "after"]
    assert sink.items == [1]
