"""Events from per-CPU perf buffers and the ring buffer reach the pipeline
in timestamp order (the reorder window), with two CPUs busy switching."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import anyio
import anyio.to_thread
import pytest

from flowtrace import Pipeline, tracepoint
from flowtrace.reorder import DEFAULT_WINDOW
from flowtrace.testing import CollectSink

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]


def busy_on_every_cpu() -> None:
    """Short-lived processes on every CPU for a moment: forks, execs and
    context switches on all of them at once."""
    cpus = os.cpu_count() or 1
    workers = [
        subprocess.Popen(
            ["sh", "-c", "i=0; while [ $i -lt 150 ]; do /bin/true; i=$((i+1)); done"]
        )
        for _ in range(cpus * 2)
    ]
    for worker in workers:
        assert worker.wait(60) == 0


def out_of_order(items: list[Any]) -> int:
    """Events older than one before them."""
    newest, count = -1, 0
    for item in items:
        if item.ts < newest:
            count += 1
        newest = max(newest, item.ts)
    return count


async def traced(transport: str, reorder: float | None) -> tuple[list[Any], int]:
    source = tracepoint("sched:sched_switch", transport=transport)
    source.reorder = reorder
    sink = CollectSink[Any]()
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        await anyio.to_thread.run_sync(busy_on_every_cpu)
        run.stop()
    stage = run.stats.stages[0]
    assert run.stats.lost == 0 and stage.received == stage.emitted == len(sink.items)
    return sink.items, stage.late


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
@pytest.mark.parametrize("window", [0.01, DEFAULT_WINDOW])
async def test_events_of_several_cpus_arrive_in_timestamp_order(
    transport: str, window: float
) -> None:
    """The default window (1 ms) is enough: the reader's clock is read
    before each read, so only a probe's own time between its timestamp and
    its commit could make an event late, however slow the reader is."""
    items, late = await traced(transport, window)
    assert len(items) > 1000
    assert out_of_order(items) == late == 0


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
async def test_without_the_window_perf_buffer_events_are_out_of_order() -> None:
    """The problem the window solves, seen on this machine: per-CPU rings
    read one after another interleave out of order."""
    items, late = await traced("perf", None)
    assert out_of_order(items) > 0
    assert late == 0  # nothing counted when nothing is reordered
