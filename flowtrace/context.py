"""What a running stage gets from its run: its counters, the whole run's
counters, a clock, and (for sources) the stop request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

from .clock import Clock
from .stats import PipelineStats, StageStats

__all__ = ["SourceContext", "StageContext"]


class StageContext:
    """Handed to a stage when a run starts it.

    ``stats`` are the stage's own counters; ``pipeline`` the counters of every
    stage of the same run (live: sinks that report loss and summaries read
    them, a replay paces its clock by them); ``clock`` the run's clock.
    """

    def __init__(
        self,
        stats: StageStats,
        clock: Clock,
        report: Callable[[str], None],
        pipeline: PipelineStats | None = None,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.pipeline = pipeline if pipeline is not None else PipelineStats([stats])
        self._report = report

    def child(self, stats: StageStats) -> StageContext:
        """A context for a stage this one runs inside itself (a sink of a fan-out):
        same clock, reports and run, its own counters."""
        return StageContext(stats, self.clock, self._report, self.pipeline)

    def report(self, message: str) -> None:
        """Tell the user something about this stage (how a probe attached)."""
        self._report(f"{self.stats.name}: {message}")


class SourceContext(StageContext):
    """A source's context: also says when to stop.

    ``kernel_stages`` are the counters of the operators the source's own
    program runs (see :mod:`flowtrace.placement`), which the source keeps
    up to date; empty when it runs none. ``latency`` is the pipeline's
    bound on how long the source may hold a record on purpose (seconds;
    None: the source's defaults).
    """

    def __init__(
        self,
        stats: StageStats,
        clock: Clock,
        report: Callable[[str], None],
        pipeline: PipelineStats | None = None,
        kernel_stages: list[StageStats] | None = None,
        latency: float | None = None,
    ) -> None:
        super().__init__(stats, clock, report, pipeline)
        self.kernel_stages = kernel_stages or []
        self.latency = latency
        self._stopping = False
        self._waits: set[anyio.CancelScope] = set()
        self._on_stop: list[Callable[[], None]] = []
        self._ready = anyio.Event()
        self._on_ready: list[Callable[[], None]] = []
        self._close_output: Callable[[], None] = lambda: None

    def close_output(self) -> None:
        """End the source's output now (the run does it when ``run``
        returns): operators then finish and the sink closes while the source
        still runs, so it can wait for its last receipt to reach the sink
        (``pipeline.receipts``) and acknowledge upstream before returning.
        Emitting after this is an error."""
        self._close_output()

    def ready(self) -> None:
        """Say the source is producing (its probes are attached); a pipeline
        started with ``task_group.start`` returns to its caller from then on."""
        callbacks, self._on_ready = self._on_ready, []
        for callback in callbacks:
            callback()
        self._ready.set()

    def call_on_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the source says it is ready (at once if it
        did), before the pipeline's starter hears of it."""
        if self._ready.is_set():
            callback()
        else:
            self._on_ready.append(callback)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @property
    def stop_requested(self) -> bool:
        """True once the pipeline asked sources to stop; a source then
        detaches, emits what it already holds, and returns."""
        return self._stopping

    def request_stop(self) -> None:
        self._stopping = True
        for scope in list(self._waits):
            scope.cancel()
        callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            callback()

    def call_on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a stop is requested (at once if it was),
        from whatever task requests it: for what must happen at the stop
        itself, like detaching probes while the source waits on a full edge.
        The callback must not raise."""
        if self._stopping:
            callback()
        else:
            self._on_stop.append(callback)

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        with self._woken_by_stop(seconds):
            await anyio.sleep(seconds)

    async def wait_readable(self, fd: int, max_wait: float) -> None:
        """Wait until ``fd`` is readable, ``max_wait`` seconds pass, or a stop is requested."""
        with self._woken_by_stop(max_wait):
            await anyio.wait_readable(fd)

    @contextmanager
    def _woken_by_stop(self, timeout: float) -> Iterator[None]:
        with anyio.move_on_after(timeout) as scope:
            if self._stopping:
                scope.cancel()
            self._waits.add(scope)
            try:
                yield
            finally:
                self._waits.discard(scope)
