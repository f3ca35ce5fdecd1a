"""Running pipelines against the real kernel inside a test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.to_thread

from flowtrace import Operator, Pipeline, Run, Source
from flowtrace.loader import load_pipeline
from flowtrace.testing import CollectSink, ListSource


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
    _accounted(run)
    return sink.items


async def through(events: list[Any], operators: Sequence[Operator[Any, Any]]) -> list[Any]:
    """What ``operators`` make of ``events`` (no kernel involved): the list
    runs to its end, unlike :func:`collect`, whose stop may come before a
    list is all emitted; the same accounting checks."""
    sink = CollectSink[Any]()
    run = Run(Pipeline(ListSource(events), operators, sink))
    await run.run()
    _accounted(run)
    assert run.stats.stages[0].emitted == len(events), run.stats.summary()
    return sink.items


def _accounted(run: Run) -> None:
    """Nothing lost in the kernel, nothing dropped, and every stage received
    exactly what the one before emitted."""
    stages = run.stats.stages
    assert run.stats.lost == 0, run.stats.summary()
    assert run.stats.dropped == 0, run.stats.summary()
    for before, after in itertools.pairwise(stages):
        assert after.received == before.emitted, run.stats.summary()
    assert stages[0].received == stages[0].emitted


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
