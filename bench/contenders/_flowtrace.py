"""Running a flowtrace contender the way an embedding application would:
the pipeline in a task group, SIGINT mapped to ``Run.stop()``."""

from __future__ import annotations

import signal

import anyio

from bench.child import Report, ready
from flowtrace import Pipeline, PipelineStats, Run


async def _run(run: Run) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(run.run)
            ready()
            async for _ in signals:
                run.stop()
                break


def run(pipeline: Pipeline) -> PipelineStats:
    """Run ``pipeline`` until SIGINT; it has drained when this returns."""
    run = Run(pipeline)
    anyio.run(_run, run)
    return run.stats


def accounting(stats: PipelineStats, delivered: int) -> Report:
    """``delivered`` plus every count of loss the pipeline keeps, by stage."""
    dropped = {"kernel": stats.lost}
    for stage in stats.stages:
        for reason, count in stage.dropped.items():
            dropped[f"{stage.name}:{reason}"] = count
    return {"delivered": delivered, "dropped": dropped, "stages": stats.summary()}
