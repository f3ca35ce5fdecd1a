"""Which attach, loss and summary records a sink still has to write.

A sink that reports reads the run's counters from ``ctx.pipeline`` (see
:class:`~flowtrace.context.StageContext`) and sets ``reports_pipeline``.
"""

from __future__ import annotations

from typing import Any

from flowtrace.schema import AttachReport, loss_report, summary
from flowtrace.stats import PipelineStats

__all__ = ["Reporter"]


class Reporter:
    """Which report records a sink still has to write about ``stats`` (a run's
    live counters).

    :meth:`due` returns the attach lines not yet written and, when the totals
    of lost or dropped events changed since the last call, a loss record.
    :meth:`final` returns what is still due plus the summary. Holds two
    integers and a pair of totals; never buffers records. Made per run.
    """

    def __init__(self, stats: PipelineStats) -> None:
        self.stats = stats
        self._attached = 0
        self._totals = (0, 0)

    def due(self) -> list[Any]:
        """Records to write before the next batch."""
        stats = self.stats
        lines = stats.attached[self._attached :]
        self._attached += len(lines)
        records: list[Any] = [AttachReport(line) for line in lines]
        totals = (stats.lost, stats.dropped)
        if totals != self._totals:
            self._totals = totals
            records.append(loss_report(stats))
        return records

    def final(self) -> list[Any]:
        """Records to write when closing: what is due, then the summary."""
        return [*self.due(), summary(self.stats)]
