"""Fan-out: one pipeline sink that writes every batch to several sinks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .context import StageContext
from .errors import FlowtraceError
from .stages import Sink
from .stats import StageStats

__all__ = ["SinkFailed", "TeeSink"]


class SinkFailed(FlowtraceError):
    """One sink of a :class:`TeeSink` raised; names the sink, chains the cause.
    The tee handed the batch to every sink (``handed_on``): the sinks' own
    counters say what became of it."""

    handed_on = True

    def __init__(self, sink: str, cause: BaseException) -> None:
        super().__init__(f"sink {sink!r} failed: {type(cause).__name__}: {cause}")
        self.sink = sink


class TeeSink(Sink[Any]):
    """Writes each batch to every sink in ``sinks``, in order, and closes them all.

    Buffers nothing itself: a batch is handed to each sink in turn (the same
    list; sinks must not modify it), so the slowest sink paces the pipeline.
    Each sink gets its own :class:`~flowtrace.stats.StageStats` (received,
    emitted, and what it drops, by reason), added to the run's counters after
    the tee's own when it opens, so the summary shows one line per sink. A
    sink that raises in ``write`` fails the pipeline with
    :class:`SinkFailed` naming it, once the other sinks got the batch too
    (see :meth:`write`). ``close`` closes every sink that opened,
    sinks that report the run's counters (``reports_pipeline``) last
    so their summaries include what the others dropped while closing; the
    first error is raised once all are closed.
    """

    def __init__(self, sinks: Sequence[Sink[Any]], *, name: str = "sinks") -> None:
        if not sinks:
            raise ValueError("TeeSink needs at least one sink")
        self.sinks = tuple(sinks)
        self.name = name

    def prints_text(self) -> bool:
        return any(sink.prints_text() for sink in self.sinks)

    def results_only(self) -> TeeSink:
        return TeeSink([sink.results_only() for sink in self.sinks], name=self.name)

    def fresh(self) -> TeeSink:
        """A tee of fresh copies of its sinks, for one run."""
        return TeeSink([sink.fresh() for sink in self.sinks], name=self.name)

    def _child_stats(self, ctx: StageContext) -> list[StageStats]:
        """One counter set per sink, named uniquely among the run's stages."""
        taken = {s.name for s in ctx.pipeline.stages}
        children = []
        for sink in self.sinks:
            name = base = sink.stage_name()
            n = 1
            while name in taken:
                n += 1
                name = f"{base}#{n}"
            taken.add(name)
            children.append(StageStats(name))
        ctx.pipeline.stages.extend(children)
        return children

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.stats = self._child_stats(ctx)
        self._opened: list[int] = []
        try:
            for i, (sink, stats) in enumerate(zip(self.sinks, self.stats, strict=True)):
                await sink.open(ctx.child(stats))
                self._opened.append(i)
        except BaseException:
            await self.close()
            raise

    async def write(self, batch: list[Any]) -> None:
        """Hand ``batch`` to every sink, also to those after one that raised;
        then raise :class:`SinkFailed` for the first that raised. A sink that
        raised without counting any drop (as sinks should, by reason) gets the
        whole batch counted as ``dropped["sink_failed"]``. Each sink's out is
        what it received and did not drop
        (:meth:`~flowtrace.stats.StageStats.settle_sink`)."""
        first: SinkFailed | None = None
        for sink, stats in zip(self.sinks, self.stats, strict=True):
            stats.received += len(batch)
            counted = stats.dropped_total
            try:
                await sink.write(batch)
            except Exception as exc:
                stats.count_failed_write(len(batch), counted, "sink_failed")
                if first is None:
                    first = SinkFailed(stats.name, exc)
                    first.__cause__ = exc
                continue
            finally:
                stats.settle_sink()
        if first is not None:
            raise first

    async def close(self) -> None:
        opened, self._opened = self._opened, []
        order = sorted(opened, key=lambda i: self.sinks[i].reports_pipeline())
        first: SinkFailed | None = None
        for i in order:
            try:
                await self.sinks[i].close()
            except Exception as exc:
                if first is None:
                    first = SinkFailed(self.stats[i].name, exc)
                    first.__cause__ = exc
            finally:  # what it dropped while closing is not out
                self.stats[i].settle_sink()
        if first is not None:
            raise first
