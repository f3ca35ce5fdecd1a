"""A pipeline is a plan: built without running anything, checked, immutable;
each run makes its own stage objects, so one definition runs many times."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from workloads import run_syncs

from flowtrace import (
    Operator,
    Pipeline,
    PipelineDefinitionError,
    Run,
    Sink,
    StageContext,
    syscall_entry,
)
from flowtrace.fanout import TeeSink
from flowtrace.recorder import RecordingSource
from flowtrace.replay import replay
from flowtrace.testing import ListSource


class Sample(msgspec.Struct, frozen=True):
    pid: int
    bytes: int

    @property
    def kib(self) -> int:
        return self.bytes // 1024


class Typed(ListSource[Sample]):
    def event_type(self) -> type[Sample]:
        return Sample


class SumBy(Operator[Any, tuple[int, int]]):
    """Sums ``field`` per pid; emits the totals at the end. State per run."""

    def __init__(self, field: str) -> None:
        self.field = field

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self.totals: dict[int, int] = {}

    def process(self, batch: list[Any]) -> Sequence[tuple[int, int]]:
        for event in batch:
            self.totals[event.pid] = self.totals.get(event.pid, 0) + getattr(event, self.field)
        return ()

    def finish(self) -> Sequence[tuple[int, int]]:
        return sorted(self.totals.items())

    def reads_fields(self) -> tuple[str, ...]:
        return ("pid", self.field)


class PerRun(Sink[Any]):
    """Keeps what one run delivered, on that run's own copy."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.items: list[Any] = []

    async def write(self, batch: list[Any]) -> None:
        self.items.extend(batch)


FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))
EVENTS = [Sample(pid=i % 3, bytes=1024 * i) for i in range(300)]
EXPECTED = [(0, 1024 * sum(range(0, 300, 3))), (1, 1024 * sum(range(1, 300, 3))),
            (2, 1024 * sum(range(2, 300, 3)))]  # fmt: skip


def items(run: Run) -> list[Any]:
    assert isinstance(run.sink, PerRun)
    return run.sink.items


@pytest.mark.anyio
async def test_one_plan_runs_in_a_row_and_at_once_with_its_own_state() -> None:
    pipeline = Typed(EVENTS, batch_size=7, interval=0.001) | SumBy("bytes") | PerRun()
    in_a_row = [Run(pipeline), Run(pipeline)]
    for run in in_a_row:
        await run.run()
    at_once = [Run(pipeline), Run(pipeline)]
    async with anyio.create_task_group() as tg:
        for run in at_once:
            tg.start_soon(run.run)
    for run in in_a_row + at_once:
        assert items(run) == EXPECTED
        assert [s.received for s in run.stats.stages] == [300, 300, 3]
    # the plan's own stage objects were never opened
    assert not hasattr(pipeline.operators[0], "totals")
    assert not hasattr(pipeline.sink, "items")


@pytest.mark.anyio
async def test_replace_shares_no_state_with_the_original() -> None:
    pipeline = Typed(EVENTS) | SumBy("bytes") | PerRun()
    fewer = pipeline.replace(source=Typed(EVENTS[:3]))
    runs = [Run(pipeline), Run(fewer)]
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(run.run)
    assert items(runs[0]) == EXPECTED
    assert items(runs[1]) == [(0, 0), (1, 1024), (2, 2048)]


@pytest.mark.anyio
async def test_a_fan_out_gives_each_run_fresh_sinks() -> None:
    pipeline = Typed(EVENTS) | SumBy("bytes") | TeeSink([PerRun(name="a"), PerRun(name="b")])
    runs = [Run(pipeline), Run(pipeline)]
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(run.run)
    for run in runs:
        assert isinstance(run.sink, TeeSink)
        assert [s.items for s in run.sink.sinks if isinstance(s, PerRun)] == [EXPECTED] * 2
        assert [(s.name, s.received) for s in run.stats.stages] == [
            ("list", 300), ("SumBy", 300), ("sinks", 3), ("a", 3), ("b", 3)
        ]  # fmt: skip


def test_a_pipeline_cannot_be_changed() -> None:
    pipeline = Typed(EVENTS) | PerRun()
    with pytest.raises(AttributeError, match="immutable"):
        pipeline.sink = PerRun()


def test_fields_are_checked_when_the_plan_is_built() -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        Typed(EVENTS) | SumBy("bytse")
    assert str(info.value) == "SumBy: Sample has no field 'bytse'; its fields: pid, bytes, kib"
    assert "\n" not in str(info.value)
    Typed(EVENTS) | SumBy("kib")  # properties are fields too
    with pytest.raises(PipelineDefinitionError, match="no field 'pidd'"):
        Pipeline(Typed(EVENTS), [SumBy("pidd")], PerRun())


class Other(msgspec.Struct, frozen=True):
    pid: int
    lat: int


class Mixed(ListSource[Any]):
    def event_types(self) -> tuple[type[Any], ...]:
        return (Sample, Other)


def test_a_source_of_several_types_offers_the_fields_any_of_them_has() -> None:
    Mixed([]) | SumBy("lat")  # Other has it (a join reads a key from one type only)
    with pytest.raises(PipelineDefinitionError) as info:
        Mixed([]) | SumBy("latt")
    message = "SumBy: none of Sample, Other has a field 'latt'; their fields: pid, bytes, kib, lat"
    assert str(info.value) == message


def test_fields_after_an_operator_of_unknown_output_are_not_checked() -> None:
    Typed(EVENTS) | SumBy("bytes") | SumBy("anything")  # SumBy's output type is unknown


@pytest.mark.kernel
@pytest.mark.anyio
async def test_one_kernel_pipeline_runs_twice_in_a_row_and_twice_at_once() -> None:
    """Each run attaches its own program and sees exactly the syncs made
    while it was attached."""
    pipeline = syscall_entry("sync") | PerRun()

    async def attached_while(syncs: int, runs: int) -> list[tuple[Run, list[int]]]:
        async with anyio.create_task_group() as tg:
            started: list[Run] = [await tg.start(pipeline.run) for _ in range(runs)]
            pids = await anyio.to_thread.run_sync(run_syncs, syncs)
            for run in started:
                run.stop()
        return [(run, pids) for run in started]

    results = [*await attached_while(2, 1), *await attached_while(3, 1)]
    results += await attached_while(4, 2)
    assert [len(pids) for _, pids in results] == [2, 3, 4, 4]
    for run, pids in results:
        ours = [e for e in items(run) if e.pid in pids]
        assert sorted(e.pid for e in ours) == sorted(pids)
        assert {e.comm for e in ours} == {"sync"}
        assert run.stats.lost == 0 and run.stats.dropped == 0


def test_explain_names_a_misspelt_field_before_attaching(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from flowtrace.operators import count\n"
        "from flowtrace.sources.syscalls import sync_calls\n"
        "from flowtrace.testing import CollectSink\n"
        'pipeline = sync_calls() | count("pidd") | CollectSink()\n'
    )
    started = time.monotonic()
    done = subprocess.run([FLOWTRACE, "explain", str(bad)], capture_output=True, text=True)
    assert time.monotonic() - started < 5  # start-up included; attaching would take longer
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"flowtrace: error: {bad}: count: SyncCall has no field 'pidd'; its fields: ts, pid, comm\n"
    )


@pytest.mark.anyio
async def test_one_replay_runs_twice_at_once_each_on_its_own_timeline(tmp_path: Path) -> None:
    recording = tmp_path / "samples.rec"
    live = Typed(EVENTS, batch_size=10) | SumBy("bytes") | PerRun()
    await live.replace(source=RecordingSource(live.source, recording)).run()
    replayed = replay(live, recording)
    runs = [Run(replayed), Run(replayed)]
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(run.run)
    for run in runs:
        assert items(run) == EXPECTED
        assert run.stats.stages[0].received == 300
    assert runs[0].clock is not runs[1].clock
