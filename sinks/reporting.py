"""How a sink learns the whole pipeline's counters and writes them as records.

A sink sees only its own :class:`~flowtrace.stats.StageStats` through
``self.ctx``. Sinks that write attach, loss and summary records implement
:class:`PipelineBound`; :func:`flowtrace.sinkspec.bind_pipeline_stats` (which
``flowtrace run`` calls) hands them the running pipeline's
:class:`~flowtrace.stats.PipelineStats`. Unbound, they report their own stage
only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from flowtrace.stats import PipelineStats, StageStats

from .schema import AttachReport, loss_report, summary

__all__ = ["PipelineBound", "Reporter"]


@runtime_checkable
class PipelineBound(Protocol):
    """A sink that reports the counters of the pipeline it runs in."""

    def bind_pipeline(self, stats: PipelineStats) -> None:
        """Use ``stats`` (the pipeline's live counters) for reports."""


class Reporter:
    """Which report records a sink still has to write.

    :meth:`due` returns the attach lines not yet written and, when the totals
    of lost or dropped events changed since the last call, a loss record.
    :meth:`final` returns what is still due plus the summary. Holds two
    integers and a pair of totals; never buffers records.
    """

    def __init__(self) -> None:
        self.stats: PipelineStats | None = None
        self._attached = 0
        self._totals = (0, 0)

    def bind(self, stats: PipelineStats) -> None:
        self.stats = stats

    def _pipeline(self, own: StageStats) -> PipelineStats:
        return self.stats if self.stats is not None else PipelineStats([own])

    def due(self, own: StageStats) -> list[Any]:
        """Records to write before the next batch."""
        stats = self._pipeline(own)
        lines = stats.attached[self._attached :]
        self._attached += len(lines)
        records: list[Any] = [AttachReport(line) for line in lines]
        totals = (stats.lost, stats.dropped)
        if totals != self._totals:
            self._totals = totals
            records.append(loss_report(stats))
        return records

    def final(self, own: StageStats) -> list[Any]:
        """Records to write when closing: what is due, then the summary."""
        return [*self.due(own), summary(self._pipeline(own))]
