"""Running a flowtrace contender the way an embedding application would:
the pipeline in a task group, SIGINT mapped to ``Pipeline.stop()``."""

from __future__ import annotations

import signal

import anyio

from bench.child import Report, ready
from flowtrace import Pipeline, PipelineStats


async def _run(pipeline: Pipeline) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            ready()
            async for _ in signals:
                pipeline.stop()
                break


def run(pipeline: Pipeline) -> PipelineStats:
    """Run ``pipeline`` until SIGINT; it has drained when this returns."""
    anyio.run(_run, pipeline)
    return pipeline.stats


def accounting(stats: PipelineStats, delivered: int) -> Report:
    """``delivered`` plus every count of loss the pipeline keeps, by stage."""
    dropped = {"kernel": stats.lost}
    for stage in stats.stages:
        for reason, count in stage.dropped.items():
            dropped[f"{stage.name}:{reason}"] = count
    return {"delivered": delivered, "dropped": dropped, "stages": stats.summary()}
