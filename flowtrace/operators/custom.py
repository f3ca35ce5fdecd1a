"""Writing your own operator, in three forms (see ``docs/operators.md``).

* :func:`per_event`: decorate ``def f(event, *args) -> Out | None``; calling
  ``f(*args)`` gives an operator emitting ``f(event, *args)`` for each event
  (``None``: nothing). Stateless, the fastest form.
* :func:`stream_operator`: decorate an async generator
  ``async def g(events, *args)`` that loops ``async for event in events``
  and ``yield``\\ s results; state lives in local variables, and it may
  await (a lookup, a sleep). Runs as its own task.
* :class:`EventOperator`: a class with ``setup``/``teardown``,
  ``on_event``, optional ``on_tick`` every ``tick_interval`` seconds and
  ``on_end``, emitting with ``self.emit(item)``.

For resources that need awaiting to acquire and release, subclass
:class:`~flowtrace.stages.AsyncOperator` (async ``setup``/``run``/
``teardown``). All forms work on batches underneath.

Side records from upstream (:class:`~flowtrace.records.SideRecord`: an
incomplete join, a late event) never reach the user's code in the three
forms: the runtime sends them on unchanged, ahead of what the operator
emits for their batch (see :mod:`flowtrace.routing`). An operator that
wants to see them sets ``accepts_side_records = True``.
"""

from __future__ import annotations

import functools
import inspect
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from operator import length_hint
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..stages import AsyncOperator, Emit, Operator
from ._fields import OpaqueFunction

__all__ = ["EventOperator", "per_event", "stream_operator"]

In = TypeVar("In")
Out = TypeVar("Out")
P = ParamSpec("P")


class _PerEvent(OpaqueFunction, Operator[In, Out]):
    """Emits ``fn(event, *args, **kwargs)`` per event, in order, skipping
    ``None``. Buffers nothing; side records go on ahead of the batch's results;
    an exception from ``fn`` fails the stage."""

    def __init__(
        self, fn: Callable[..., Out | None], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = getattr(fn, "__name__", "per_event")

    def process(self, batch: list[In]) -> Sequence[Out]:
        fn, args, kwargs = self.fn, self.args, self.kwargs
        if args or kwargs:
            results = [fn(e, *args, **kwargs) for e in batch]
        else:
            results = list(map(fn, batch))
        return [r for r in results if r is not None]


def per_event(
    fn: Callable[Concatenate[In, P], Out | None],
) -> Callable[P, Operator[In, Out]]:
    """Make an operator factory of a per-event function.

    ::

        @per_event
        def slower_than(e: ReadLatency, usecs: int) -> ReadLatency | None:
            return e if e.latency_ns > usecs * 1000 else None

        pipeline = reads() | slower_than(500) | sink

    The function gets each event and the arguments given to the factory; what
    it returns is emitted, ``None`` is not. Each call of the factory is a
    new operator. Buffers nothing, emits per batch in order; side records
    from upstream go on unchanged, ahead of the batch's results, and never
    reach the function. End of stream: nothing is held, nothing more is emitted.
    Errors: an exception from the function fails the stage; decorating an
    async function raises :class:`~flowtrace.errors.PipelineDefinitionError`.
    """

    if not callable(fn) or inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):
        raise PipelineDefinitionError(
            f"per_event: {getattr(fn, '__name__', fn)!r} must be a plain function of an event;"
            " use stream_operator for async generators"
        )

    @functools.wraps(fn)
    def make(*args: P.args, **kwargs: P.kwargs) -> Operator[In, Out]:
        return _PerEvent(fn, args, kwargs)

    return make


class _GeneratorOperator(OpaqueFunction, AsyncOperator[In, Out]):
    """Runs an async generator over the events; see :func:`stream_operator`."""

    def __init__(
        self,
        fn: Callable[..., AsyncIterator[Out]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = getattr(fn, "__name__", "stream_operator")

    async def run(self, batches: AsyncIterator[list[In]], emit: Emit[Out]) -> None:
        ready: list[Out] = []
        current: Iterator[In] = iter(())

        async def events() -> AsyncGenerator[In, None]:
            nonlocal current
            async for batch in batches:
                current = iter(batch)
                for event in current:
                    yield event
                if ready:  # what this batch produced goes on as one batch
                    out = ready.copy()
                    ready.clear()
                    await emit(out)

        async with aclosing(events()) as stream:
            results = self.fn(stream, *self.args, **self.kwargs)
            try:
                async for item in results:
                    ready.append(item)  # noqa: PERF401 (sent on per batch by events())
            finally:
                aclose = getattr(results, "aclose", None)
                if aclose is not None:
                    await aclose()
        # ended before its input: what it did not take of the current batch
        self.ctx.stats.drop("after_operator_end", length_hint(current))
        if ready:
            await emit(ready)


def stream_operator(
    fn: Callable[Concatenate[AsyncIterator[In], P], AsyncIterator[Out]],
) -> Callable[P, Operator[In, Out]]:
    """Make an operator factory of an async generator over the event stream.

    ::

        @stream_operator
        async def running_max(events: AsyncIterator[Read]) -> AsyncIterator[int]:
            top = 0
            async for e in events:
                if e.bytes > top:
                    top = e.bytes
                    yield top

    The generator gets the events one by one (taken from batches, so no
    event waits for the event loop) and the factory's arguments; what it
    yields is emitted, collected per input batch and sent on when that batch
    is used up (or the generator ends). Code after its ``async for`` runs at
    end of stream (emit final results there). It may await anything, which
    holds up its own input only. Buffers what it yields for one input batch;
    if it returns before its input ends, the pipeline stops and the rest is
    counted as dropped (``after_operator_end``). Side records from upstream
    never reach the generator: they go on unchanged, ahead of what it yields
    for their batch. Errors: an exception fails the stage; the generator is
    always closed (``finally`` blocks run), also on cancellation; decorating
    anything but an async generator function raises
    :class:`~flowtrace.errors.PipelineDefinitionError`.
    """

    if not inspect.isasyncgenfunction(fn):
        raise PipelineDefinitionError(
            f"stream_operator: {getattr(fn, '__name__', fn)!r} is not an async generator"
            " function; write it as 'async def' with 'async for' and 'yield'"
        )

    @functools.wraps(fn)
    def make(*args: P.args, **kwargs: P.kwargs) -> Operator[In, Out]:
        return _GeneratorOperator(fn, args, kwargs)

    return make


class EventOperator(Operator[In, Out], Generic[In, Out]):
    """The class form: per-event methods with setup and teardown.

    Override :meth:`on_event` (called for each event, in order), and as
    needed :meth:`setup` (once, before the first event; ``self.ctx`` is set),
    :meth:`on_tick` (every ``tick_interval`` seconds of the pipeline clock,
    also without events), :meth:`on_end` (once, at end of stream) and
    :meth:`teardown` (once at the very end, also on failure, if ``setup``
    returned). Call :meth:`emit` from ``on_event``, ``on_tick`` and
    ``on_end`` to send results on; they go downstream, in emit order, when
    that call's batch is done. Side records from upstream never reach
    ``on_event``: they go on unchanged, ahead of what ``on_event`` emits
    for their batch. What the class holds (buffers) is its own
    business: document its bounds, as flowtrace's operators do. End of
    stream: ``on_end`` runs, then ``teardown``. Errors: an exception from a
    handler fails the stage (``teardown`` still runs); :meth:`emit` outside
    the handlers raises :class:`RuntimeError`.
    """

    def setup(self) -> None:
        """Prepare state; ``self.ctx`` (counters, clock) is available."""

    @abstractmethod
    def on_event(self, event: In) -> None:
        """Handle one event; :meth:`emit` results."""

    def on_tick(self) -> None:
        """Runs every ``tick_interval`` seconds when that is set."""

    def on_end(self) -> None:
        """Runs once at end of stream; emit what is still held."""

    def teardown(self) -> None:
        """Release what ``setup`` acquired."""

    def reads_fields(self) -> tuple[str, ...]:
        """The event fields ``on_event`` reads, for checking a plan; override
        to declare them (default: unknown, empty)."""
        return ()

    def output_type(self, input_type: type | None) -> type | None:
        """The type of what it emits given its input's; override to declare
        it (default: unknown, None)."""
        return None

    def emit(self, item: Out) -> None:
        """Send ``item`` downstream (from ``on_event``, ``on_tick``, ``on_end``)."""
        if self._out is None:
            raise RuntimeError(
                f"{self.stage_name()}: emit() works inside on_event, on_tick and on_end only"
            )
        self._out.append(item)

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._out: list[Out] | None = None
        self._set_up = False
        self.setup()
        self._set_up = True

    def process(self, batch: list[In]) -> Sequence[Out]:
        out: list[Out] = []
        self._out = out
        handle = self.on_event
        try:
            for event in batch:
                handle(event)
        finally:
            self._out = None
        return out

    def tick(self) -> Sequence[Out]:
        return self._collect(self.on_tick)

    def finish(self) -> Sequence[Out]:
        return self._collect(self.on_end)

    def _collect(self, call: Callable[[], None]) -> list[Out]:
        out: list[Out] = []
        self._out = out
        try:
            call()
        finally:
            self._out = None
        return out

    def close(self) -> None:
        if getattr(self, "_set_up", False):
            self._set_up = False
            self.teardown()
