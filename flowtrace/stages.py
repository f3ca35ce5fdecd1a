"""The three kinds of stage a pipeline is made of, as abstract base classes.

Batches (lists of events, oldest first) are what moves between stages; a
stage sees whole batches, so per-event work is a plain loop or comprehension
inside one call, never an await per event.

Lifecycle guarantees, for every stage a pipeline runs:

* ``open``/``start`` is called once before any data; ``close`` is called once
  afterwards, also when the pipeline fails or is cancelled.
* A source is asked to stop (``ctx.stop_requested``) before anything
  downstream finishes; operators then get ``finish()`` once the stream above
  them has ended, and sinks get ``close()`` after their last batch.
* An exception a stage raises stops the whole pipeline with a
  :class:`~flowtrace.errors.StageError` naming that stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from .context import SourceContext, StageContext

if TYPE_CHECKING:
    from .pipeline import Flow, Pipeline

__all__ = ["Emit", "Operator", "Sink", "Source"]

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
    """

    tick_interval: float | None = None

    def open(self, ctx: StageContext) -> None:
        """Called once before the first batch."""
        self.ctx = ctx

    @abstractmethod
    def process(self, batch: list[In]) -> Sequence[Out]: ...

    def tick(self) -> Sequence[Out]:
        return ()

    def finish(self) -> Sequence[Out]:
        return ()

    def close(self) -> None:
        """Called once at the end, also on failure."""


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


def as_list(values: Sequence[T]) -> list[T]:
    return values if isinstance(values, list) else list(values)
