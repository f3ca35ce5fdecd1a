"""Running pipelines against the real kernel inside a test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.to_thread

from flowtrace import Operator, Pipeline, Source
from flowtrace.loader import load_pipeline
from flowtrace.testing import CollectSink


async def collect(
    source: Source[Any],
    workload: Callable[[], Any],
    operators: Sequence[Operator[Any, Any]] = (),
) -> list[Any]:
    """Attach ``source``, run ``workload`` in a thread, stop; what reached the end.

    The stop follows the workload at once: what the kernel holds then is
    delivered by the stop's own drain, which these tests therefore check.
    Also checks the run's accounting: nothing lost in the kernel, nothing
    dropped, and every stage received exactly what the one before emitted.
    """
    sink = CollectSink[Any]()
    pipeline = Pipeline(source, operators, sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        await anyio.to_thread.run_sync(workload)
        run.stop()
    stages = run.stats.stages
    assert run.stats.lost == 0, run.stats.summary()
    assert run.stats.dropped == 0, run.stats.summary()
    for before, after in itertools.pairwise(stages):
        assert after.received == before.emitted, run.stats.summary()
    assert stages[0].received == stages[0].emitted
    return sink.items


def lesson_source(path: str, args: list[str] | None = None) -> Source[Any]:
    return load_pipeline(path, args).source


@contextmanager
def bpf_program(text: str) -> Iterator[Any]:
    """A bcc BPF object for ``text``, cleaned up afterwards even when its
    constructor fails half-way (bcc does not free what it built then)."""
    from bcc import BPF

    bpf = BPF.__new__(BPF)
    try:
        bpf.__init__(text=text.encode())
        yield bpf
    finally:
        bpf.cleanup()
