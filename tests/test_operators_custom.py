"""Custom operators: the three documented forms, run from the exact code in
docs/operators.md, and the runtime support for async operators."""

from __future__ import annotations

import re
import sys
import types
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

from flowtrace.clock import ManualClock
from flowtrace.errors import PipelineDefinitionError, StageError
from flowtrace.operators import EventOperator, per_event, stream_operator
from flowtrace.records import JoinIncomplete
from flowtrace.runtime import Run
from flowtrace.stages import AsyncOperator, Emit
from flowtrace.testing import CollectSink, ListSource, OperatorHarness

DOC = Path(__file__).resolve().parent.parent / "docs" / "operators.md"


def doc_examples() -> dict[str, str]:
    """The python blocks of docs/operators.md marked ``<!-- example: NAME -->``."""
    text = DOC.read_text()
    blocks = re.findall(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", text, re.S)
    return dict(blocks)


@pytest.fixture(scope="module")
def doc() -> Iterator[types.ModuleType]:
    """The documented example code, executed as one module, block by block."""
    module = types.ModuleType("operators_doc_example")
    sys.modules[module.__name__] = module
    try:
        examples = doc_examples()
        assert list(examples) == ["events", "per-event", "class", "generator"]
        for code in examples.values():
            exec(compile(code, str(DOC), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


def reads(doc: types.ModuleType, spec: list[tuple[int, int]]) -> list[Any]:
    return [doc.ReadLatency(ts=i, pid=pid, lat_ns=ns) for i, (pid, ns) in enumerate(spec)]


def test_documented_harness_snippet_runs(doc: types.ModuleType) -> None:
    text = DOC.read_text()
    snippet = re.search(
        r"```python\n(from flowtrace.testing import OperatorHarness\n.*?)```", text, re.S
    )
    assert snippet is not None
    exec(compile(snippet.group(1), str(DOC), "exec"), dict(doc.__dict__))


def test_per_event_example(doc: types.ModuleType) -> None:
    events = reads(doc, [(1, 400_000), (1, 600_000), (2, 500_001)])
    assert OperatorHarness(doc.slower_than(500)).feed(events) == [events[1], events[2]]
    assert doc.slower_than.__name__ == "slower_than"


def test_class_example_moving_average(doc: types.ModuleType) -> None:
    clock = ManualClock()
    op = doc.MovingAverage(n=3, interval=1.0, max_pids=2)
    h = OperatorHarness(op, clock)
    h.feed(reads(doc, [(7, 1000), (7, 2000), (8, 9000), (7, 3000), (7, 7000)]))
    first = h.advance(1.0)
    assert first == [doc.LatencyAverage(7, 4.0, 3), doc.LatencyAverage(8, 9.0, 1)]
    assert h.advance(1.0) == []  # nothing changed, nothing emitted
    h.feed(reads(doc, [(9, 5000)]))  # a third process: pid 8 (heard from least recently) goes
    assert h.stats.dropped == {"pid_evicted": 1}
    h.feed(reads(doc, [(7, 1000)]))
    assert h.finish() == [
        doc.LatencyAverage(7, (3000 + 7000 + 1000) / 3 / 1000, 3),
        doc.LatencyAverage(9, 5.0, 1),
    ]
    assert op.latest == {}  # teardown ran


@pytest.mark.anyio
async def test_class_example_in_a_pipeline_matches_a_reference(doc: types.ModuleType) -> None:
    spec = [(pid, (i * 7919) % 100_000) for i, pid in enumerate([1, 2, 3] * 500)]
    sink = CollectSink[Any]()
    await (
        ListSource(reads(doc, spec), batch_size=50) | doc.MovingAverage(n=5, interval=3600) | sink
    ).run()
    last: dict[int, deque[int]] = {}
    for pid, ns in spec:
        last.setdefault(pid, deque(maxlen=5)).append(ns)
    assert sink.items == [
        doc.LatencyAverage(pid, sum(w) / len(w) / 1000, len(w)) for pid, w in sorted(last.items())
    ]


@pytest.mark.anyio
async def test_generator_example_in_a_pipeline(doc: types.ModuleType) -> None:
    spec = [(pid, i * 1000) for i, pid in enumerate([1, 2, 1, 3, 1, 2] * 50)]
    sink = CollectSink[Any]()
    stats = await (
        ListSource(reads(doc, spec), batch_size=16) | doc.moving_average(n=2, max_pids=2) | sink
    ).run()
    expected = []
    latest: dict[int, deque[int]] = {}
    for pid, ns in spec:
        if pid not in latest and len(latest) >= 2:
            del latest[next(iter(latest))]
        window = latest.setdefault(pid, deque(maxlen=2))
        window.append(ns)
        expected.append(doc.LatencyAverage(pid, sum(window) / len(window) / 1000, len(window)))
    assert sink.items == expected
    op = stats.stages[1]
    assert (op.received, op.emitted) == (len(spec), len(spec))
    assert sink.batches <= -(-len(spec) // 16)  # results go on per input batch, not per event


# -- the async-generator runtime ---------------------------------------


@stream_operator
async def totals_at_end(events: AsyncIterator[int], scale: int = 1) -> AsyncIterator[int]:
    total = 0
    async for e in events:
        total += e
    yield total * scale


@stream_operator
async def first_n(events: AsyncIterator[int], n: int) -> AsyncIterator[int]:
    seen = 0
    async for e in events:
        yield e
        seen += 1
        if seen == n:
            return


closed: list[str] = []


@stream_operator
async def slow_echo(events: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for e in events:
            await anyio.lowlevel.checkpoint()  # real awaits are allowed
            if e == 13:
                raise ValueError("unlucky")
            yield e
    finally:
        closed.append("slow_echo")


@pytest.mark.anyio
async def test_generator_emits_after_its_loop_at_end_of_stream() -> None:
    sink = CollectSink[int]()
    await (ListSource(range(100), batch_size=7) | totals_at_end(scale=2) | sink).run()
    assert sink.items == [2 * sum(range(100))]


@pytest.mark.anyio
async def test_a_generator_that_ends_early_stops_the_pipeline_and_counts_the_rest() -> None:
    sink = CollectSink[int]()
    source = ListSource(range(100_000), batch_size=10, interval=0.001)
    with anyio.fail_after(30):
        stats = await (source | first_n(25) | sink).run()
    assert sink.items == list(range(25))
    op = stats.stages[1]
    assert op.received < 100_000  # the source was stopped
    assert op.received - 25 == op.dropped["after_operator_end"]


@pytest.mark.anyio
async def test_a_failing_generator_is_named_and_closed() -> None:
    closed.clear()
    sink = CollectSink[int]()
    run = Run(ListSource(range(20), batch_size=4) | slow_echo() | sink)
    with pytest.raises(StageError, match=r"stage 'slow_echo' failed: ValueError: unlucky"):
        await run.run()
    assert closed == ["slow_echo"]
    assert sink.items == list(range(12))
    assert isinstance(run.sink, CollectSink) and run.sink.closed


def test_generator_operator_under_trio() -> None:
    async def main() -> list[int]:
        sink = CollectSink[int]()
        await (ListSource(range(10)) | totals_at_end() | sink).run()
        return sink.items

    assert trio.run(main) == [45]


class Resource(AsyncOperator[int, int]):
    """An AsyncOperator with async setup/teardown, recording the lifecycle."""

    def __init__(self, fail_in: str = "") -> None:
        self.fail_in = fail_in
        self.log: list[str] = []

    async def setup(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append("setup")
        if self.fail_in == "setup":
            raise RuntimeError("no connection")

    async def run(self, batches: AsyncIterator[list[int]], emit: Emit[int]) -> None:
        async for batch in batches:
            if self.fail_in == "run":
                raise RuntimeError("broken")
            await emit([x + 1 for x in batch])

    async def teardown(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append("teardown")

    def close(self) -> None:
        self.log.append("close")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fail_in", "log"),
    [
        ("", ["setup", "teardown", "close"]),
        ("run", ["setup", "teardown", "close"]),
        ("setup", ["setup", "close"]),
    ],
)
async def test_async_operator_lifecycle(fail_in: str, log: list[str]) -> None:
    sink = CollectSink[int]()
    run = Run(ListSource(range(5)) | Resource(fail_in) | sink)
    if fail_in:
        with pytest.raises(StageError):
            await run.run()
    else:
        await run.run()
        assert sink.items == [1, 2, 3, 4, 5]
    op = run.operators[0]
    assert isinstance(op, Resource) and op.log == log
    assert isinstance(run.sink, CollectSink) and run.sink.closed


def test_async_operator_is_not_driven_by_process() -> None:
    with pytest.raises(TypeError, match="AsyncOperator"):
        OperatorHarness(Resource())
    with pytest.raises(TypeError, match="run\\(\\), not process"):
        Resource().process([1])


class Silent(EventOperator[int, int]):
    def on_event(self, event: int) -> None:
        pass

    def setup(self) -> None:
        self.emit(1)


def test_emit_outside_the_handlers_is_an_error() -> None:
    with pytest.raises(
        RuntimeError, match="emit\\(\\) works inside on_event, on_tick and on_end only"
    ):
        OperatorHarness(Silent())


def test_per_event_with_arguments_skips_none() -> None:
    @per_event
    def scaled_odd(x: int, factor: int) -> int | None:
        return x * factor if x % 2 else None

    result: Sequence[int] = OperatorHarness(scaled_odd(factor=3)).feed(range(6))
    assert result == [3, 9, 15]


def test_decorators_reject_the_wrong_kind_of_function() -> None:
    async def not_a_generator(events: AsyncIterator[int]) -> AsyncIterator[int]:
        return events

    with pytest.raises(PipelineDefinitionError, match="is not an async generator function"):
        stream_operator(not_a_generator)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="use stream_operator"):
        per_event(totals_at_end.__wrapped__)  # type: ignore[attr-defined]


class Ticker(EventOperator[int, float]):
    """Emits the clock's time on each tick."""

    def __init__(self, interval: float) -> None:
        self.tick_interval = interval

    def on_event(self, event: int) -> None:
        pass

    def on_tick(self) -> None:
        self.emit(round(self.ctx.clock.now(), 9))


def test_harness_ticks_on_the_runtimes_schedule() -> None:
    """Ticks every 0.2 s on steps of 0.1 s: on every second step, never a
    step late however the floats add up (the runtime's TickSchedule)."""
    h = OperatorHarness(Ticker(0.2), ManualClock())
    ticks = [h.advance(0.1) for _ in range(10)]
    assert ticks == [[], [0.2], [], [0.4], [], [0.6], [], [0.8], [], [1.0]]
    h = OperatorHarness(Ticker(1.0), ManualClock(5.0))
    assert h.advance(3.5) == [8.5]  # one tick however far the clock jumps
    assert h.advance(0.4) == []
    assert h.advance(0.1) == [9.0]


@stream_operator
async def running_total(events: AsyncIterator[int]) -> AsyncIterator[int]:
    total = 0
    async for e in events:
        total += e
        yield total


@pytest.mark.anyio
async def test_side_records_pass_every_custom_form() -> None:
    """Side records never reach user code: they go on ahead of what
    ``per_event``, ``EventOperator`` and a generator emit for their batch."""
    side = JoinIncomplete(key={"k": 1}, start=0, reason="timeout", waited=1.0)

    @per_event
    def plus_one(x: int) -> int:
        return x + 1

    class Doubler(EventOperator[int, int]):
        def on_event(self, event: int) -> None:
            self.emit(event * 2)

    batch: list[Any] = [1, side, 2, 3, side]
    assert OperatorHarness(plus_one()).feed(batch) == [side, side, 2, 3, 4]
    assert OperatorHarness(Doubler()).feed(batch) == [side, side, 2, 4, 6]
    sink = CollectSink[Any]()
    await (ListSource([*batch, 4, side], batch_size=5) | running_total() | sink).run()
    assert sink.items == [side, side, 1, 3, 6, side, 10]


class Lifecycle(EventOperator[int, int]):
    """Records setup and teardown."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def on_event(self, event: int) -> None:
        pass

    def setup(self) -> None:
        self.log.append("setup")

    def teardown(self) -> None:
        self.log.append("teardown")


def test_teardown_runs_once_and_only_after_a_setup() -> None:
    never_opened = Lifecycle()
    never_opened.close()  # a run that failed before this stage opened closes it all the same
    assert never_opened.log == []
    op = Lifecycle()
    h = OperatorHarness(op)
    h.finish()
    op.close()
    assert op.log == ["setup", "teardown"]


class FailingSetup(Lifecycle):
    def setup(self) -> None:
        super().setup()
        raise OSError("no such device")


def test_teardown_does_not_run_after_a_setup_that_failed() -> None:
    op = FailingSetup()
    with pytest.raises(OSError, match="no such device"):
        OperatorHarness(op)
    op.close()
    assert op.log == ["setup"]
