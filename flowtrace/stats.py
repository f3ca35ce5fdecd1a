"""Counters every stage keeps, readable while a pipeline runs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PipelineStats", "StageStats"]


@dataclass
class StageStats:
    """Events a stage received, emitted downstream, and dropped (by reason).

    For a source, ``received`` is what it read from its origin (the kernel
    buffer, a list, a recording) and ``lost`` what its origin reports it could
    not deliver (records the kernel failed to write into a full buffer), and
    ``late`` how many it passed on out of timestamp order (later than its
    reorder window, see :mod:`flowtrace.reorder`). Every count is exact;
    none is sampled.
    """

    name: str
    received: int = 0
    emitted: int = 0
    lost: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    late: int = 0

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` events dropped for ``reason``."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def settle_sink(self) -> None:
        """A sink's out: what it received and has not dropped. What waits in
        a sink's own buffer counts as out until the sink drops it (a full
        buffer, a peer that never took it: counted by reason, then out no
        more), so in = out + dropped at every moment, and at the end out is
        what the sink delivered. Called after each write and after close."""
        self.emitted = self.received - self.dropped_total

    def count_failed_write(self, events: int, dropped_before: int, reason: str) -> None:
        """Settle a sink's write of ``events`` that did not finish: what the
        sink counted as dropped since ``dropped_before`` (its
        ``dropped_total`` then) stays dropped and the rest was written; a
        sink that counted nothing gets all ``events`` dropped for
        ``reason``."""
        if self.dropped_total == dropped_before:
            self.drop(reason, events)
        self.settle_sink()

    @property
    def dropped_total(self) -> int:
        """Events this stage dropped, all reasons together."""
        return sum(self.dropped.values())

    def describe(self) -> str:
        text = f"{self.name}: {self.received} in, {self.emitted} out"
        if self.lost:
            text += f", {self.lost} lost before delivery"
        for reason, count in sorted(self.dropped.items()):
            text += f", {count} dropped ({reason})"
        if self.late:
            text += f", {self.late} late (out of timestamp order)"
        return text


@dataclass
class PipelineStats:
    """Counters of every stage in pipeline order, and how each probe attached.

    The first :attr:`chain_length` stages are the pipeline's own, source to
    sink; stages a sink adds while opening (a fan-out's sinks) follow them.
    ``name`` is the pipeline's (empty when it has none).
    """

    stages: list[StageStats] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    name: str = ""
    receipts: dict[str, int] = field(default_factory=dict)
    """Per source name, the token of the latest
    :class:`~flowtrace.records.Receipt` that reached the sink: the sink has
    written everything the source emitted before it."""
    chain_length: int = field(init=False)

    def __post_init__(self) -> None:
        self.chain_length = len(self.stages)

    @property
    def chain(self) -> list[StageStats]:
        """The pipeline's own stages, source to sink, in order."""
        return self.stages[: self.chain_length]

    def stage(self, name: str) -> StageStats:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def lost(self) -> int:
        """Events lost before reaching the pipeline (kernel buffer full)."""
        return sum(s.lost for s in self.stages)

    @property
    def dropped(self) -> int:
        """Events dropped inside the pipeline, every stage and reason together."""
        return sum(s.dropped_total for s in self.stages)

    def summary(self) -> list[str]:
        """Lines for the end-of-run report, one per stage."""
        return [s.describe() for s in self.stages]
