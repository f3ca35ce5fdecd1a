"""The three kinds of stage a pipeline is made of, as abstract base classes.

Batches (lists of events, oldest first) are what moves between stages; a
stage sees whole batches, so per-event work is a plain loop or comprehension
inside one call, never an await per event.

Lifecycle guarantees, for every stage a pipeline runs:

* Operators and sinks are opened (``open``) once before their first batch
  and closed (``close``) once afterwards, also when the pipeline fails or is
  cancelled. A source has no ``open`` or ``close``: its ``run`` is awaited
  once and releases what it acquired (detaches probes) before returning.
* A source is asked to stop (``ctx.stop_requested``) before anything
  downstream finishes; operators then get ``finish()`` once the stream above
  them has ended, and sinks get ``close()`` after their last batch.
* An exception a stage raises stops the whole pipeline with a
  :class:`~flowtrace.errors.StageError` naming that stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar, overload

from .context import SourceContext, StageContext

if TYPE_CHECKING:
    from .pipeline import Flow, Pipeline

__all__ = ["AsyncOperator", "Emit", "Operator", "Sink", "Source"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

Emit = Callable[[list[T]], Awaitable[None]]
"""How a source hands a batch downstream; may wait (backpressure)."""


class _Named:
    name: str = ""

    def stage_name(self) -> str:
        return self.name or type(self).__name__


class Source(_Named, ABC, Generic[Out]):
    """Produces batches of events.

    ``run`` emits until its input is exhausted or ``ctx.stop_requested``
    becomes true, then returns; it must release everything it acquired
    (detach probes) before returning, also when cancelled or failing.
    """

    @abstractmethod
    async def run(self, ctx: SourceContext, emit: Emit[Out]) -> None: ...

    def describe(self) -> list[str]:
        """Lines explaining what the source will do, without doing it."""
        return [f"source {self.stage_name()}"]

    @overload
    def __or__(self, other: Operator[Out, T]) -> Flow[T]: ...
    @overload
    def __or__(self, other: Sink[Out]) -> Pipeline: ...
    def __or__(self, other: Operator[Out, T] | Sink[Out]) -> Flow[T] | Pipeline:
        from .pipeline import Flow

        return Flow[Out](self, ()) | other


class Operator(_Named, ABC, Generic[In, Out]):
    """Transforms batches; synchronous, so it never blocks the pipeline.

    ``process`` gets each batch and returns what to emit now (possibly
    nothing). If ``tick_interval`` is set, ``tick`` runs whenever that many
    seconds of the pipeline clock (``self.ctx.clock``) have passed since the
    last tick, also when no events arrive; it must emit everything due at
    ``ctx.clock.now()``, since a virtual clock may jump several intervals at
    once. ``finish`` runs once at end of stream and returns what is still held
    (open windows).

    An operator that has seen enough (a window operator after its last
    window) calls :meth:`request_pipeline_stop`.

    Side records (:class:`~flowtrace.records.SideRecord`) from upstream
    never reach ``process`` (nor the batches an :class:`AsyncOperator`
    reads): the runtime sends them on ahead of what the operator emits for
    their batch (:mod:`flowtrace.routing`), unless the class sets
    ``accepts_side_records = True`` and handles them itself.
    """

    accepts_side_records: ClassVar[bool] = False
    tick_interval: float | None = None
    pipeline_stop_requested: bool = False

    def open(self, ctx: StageContext) -> None:
        """Called once before the first batch."""
        self.ctx = ctx
        self.pipeline_stop_requested = False

    def request_pipeline_stop(self) -> None:
        """Ask the pipeline to stop as :meth:`Pipeline.stop` does: the source
        stops, what is in flight still flows through ``process``, then
        ``finish`` runs. Takes effect when the current call returns."""
        self.pipeline_stop_requested = True

    @abstractmethod
    def process(self, batch: list[In]) -> Sequence[Out]: ...

    def tick(self) -> Sequence[Out]:
        return ()

    def finish(self) -> Sequence[Out]:
        return ()

    def close(self) -> None:
        """Called once at the end, also on failure."""


class AsyncOperator(Operator[In, Out]):
    """An operator that runs as its own task, for logic that awaits or is
    written as one loop over the stream (see
    :func:`flowtrace.operators.stream_operator`).

    The pipeline calls ``open(ctx)``, awaits :meth:`setup`, then awaits
    :meth:`run` with the input batches and an ``emit`` function, then awaits
    :meth:`teardown` (once ``setup`` has returned: also on failure or
    cancellation, shielded from it), and finally calls ``close()``. ``tick``
    and ``tick_interval`` are not used (await in ``run`` instead); ``process``
    must not be called. Each batch ``run`` takes from ``batches`` counts as received;
    ``await emit(list)`` sends a batch on (waiting when downstream is full).
    If ``run`` returns before its input ends, the pipeline is asked to stop
    and the rest of the input is counted as dropped (``after_operator_end``).
    """

    async def setup(self) -> None:
        """Acquire what ``run`` needs (may await)."""

    @abstractmethod
    async def run(self, batches: AsyncIterator[list[In]], emit: Emit[Out]) -> None: ...

    async def teardown(self) -> None:
        """Release what ``setup`` acquired (may await)."""

    def process(self, batch: list[In]) -> Sequence[Out]:
        raise TypeError(
            f"{self.stage_name()} is an AsyncOperator: the pipeline runs it with run(),"
            " not process()"
        )


class Sink(_Named, ABC, Generic[In]):
    """Consumes batches: prints, writes, forwards.

    ``close`` flushes what the sink buffers; what it could not deliver is
    counted in ``ctx.stats.dropped``.
    """

    async def open(self, ctx: StageContext) -> None:
        self.ctx = ctx

    @abstractmethod
    async def write(self, batch: list[In]) -> None: ...

    async def close(self) -> None:
        """Flush and release; called once, also on failure."""
