"""The three kinds of stage, and pipelines as plans composed of them.

Batches (lists of events, oldest first) are what moves between stages; a
stage sees whole batches, so per-event work is a plain loop or comprehension
inside one call, never an await per event.

``source | operator | ... | sink`` builds a :class:`Pipeline`: an immutable
description. Nothing runs or attaches while it is built; field names the
operators read are checked against the source's event type then. Each run
(:meth:`Pipeline.run`, :class:`~flowtrace.runtime.Run`) makes fresh stage
objects from the plan with :meth:`fresh`, so one pipeline runs any number of
times, in a row or at once, and the stage objects in the plan are never
opened. A stage therefore keeps its configuration in ``__init__`` and every
piece of per-run state in what ``open()`` (or a source's ``run()``) creates.

Lifecycle guarantees, for every stage a run starts:

* Operators and sinks are opened (``open``) once before their first batch
  and closed (``close``) once afterwards, also when the run fails or is
  cancelled. A source has no ``open`` or ``close``: its ``run`` is awaited
  once and releases what it acquired (detaches probes) before returning.
* A source is asked to stop (``ctx.stop_requested``) before anything
  downstream finishes; operators then get ``finish()`` once the stream above
  them has ended, and sinks get ``close()`` after their last batch.
* An exception a stage raises stops the whole run with a
  :class:`~flowtrace.errors.StageError` naming that stage.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, overload

import anyio
from anyio.abc import TaskStatus

from .clock import Clock, MonotonicClock
from .context import SourceContext, StageContext
from .errors import KernelUnreadable, PipelineDefinitionError
from .kernel_forms import KernelForm, Place, Placement, UserOnly
from .runtime import Overflow, Run
from .stats import PipelineStats

__all__ = [
    "AsyncOperator",
    "Emit",
    "Flow",
    "Operator",
    "Overflow",
    "Pipeline",
    "Sink",
    "Source",
    "field_names",
]

T = TypeVar("T")
U = TypeVar("U")
In = TypeVar("In")
Out = TypeVar("Out")
S = TypeVar("S", bound="_Stage")

Emit = Callable[[list[T]], Awaitable[None]]
"""How a source hands a batch downstream; may wait (backpressure)."""


class _Stage:
    name: str = ""

    def stage_name(self) -> str:
        return self.name or type(self).__name__

    def fresh(self: S) -> S:
        """A stage with this one's configuration and no run state, for one run.

        The default is a shallow copy, which is right for stages that keep
        per-run state only in what ``open()``/``run()`` create. A stage that
        holds other stages (a fan-out, a recorder) returns copies holding
        fresh copies of them.
        """
        return copy.copy(self)


class Source(_Stage, ABC, Generic[Out]):
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

    def event_type(self) -> type[Any] | None:
        """The type of the events it emits, when known (a msgspec Struct):
        what plans check field names against, and what recordings carry.
        May read the kernel's description of the event (tracefs); raises
        :class:`~flowtrace.errors.FlowtraceError` when that fails."""
        return None

    def event_types(self) -> tuple[type[Any], ...]:
        """Every type of event it emits: one, or several for a source over
        several probes whose events each keep their own type (what a
        recording lists); empty when not known."""
        event = self.event_type()
        return () if event is None else (event,)

    def replay_types(self) -> tuple[type[Any] | str, ...]:
        """What a replay of its recording reads: :meth:`event_types`, where a
        type generated from the running kernel's description may be given by
        name instead, to be rebuilt from the recording's header (so a replay
        reads nothing of the kernel and needs no root)."""
        return self.event_types()

    def generated_code(self) -> str | None:
        """The program it would load into the kernel (BPF C), if any, for
        ``flowtrace explain``; generating it attaches nothing."""
        return None

    def placement(
        self, operators: Sequence[Operator[Any, Any]], pushdown: bool = True
    ) -> Placement:
        """Where this source and ``operators`` run: here, every operator in
        user space (a kernel source may run some in its program, see
        :mod:`flowtrace.placement`)."""
        why = f"the source {self.stage_name()} is not a BPF program"
        places = [Place(self.stage_name(), "user", "reads events in user space")]
        places += [Place(op.stage_name(), "user", why) for op in operators]
        return Placement(tuple(places), self, 0)

    @overload
    def __or__(self, other: Operator[Out, T]) -> Flow[T]: ...
    @overload
    def __or__(self, other: Sink[Out]) -> Pipeline: ...
    def __or__(self, other: Operator[Out, T] | Sink[Out]) -> Flow[T] | Pipeline:
        return Flow[Out](self, ()) | other


class Operator(_Stage, ABC, Generic[In, Out]):
    """Transforms batches; synchronous, so it never blocks the pipeline.

    ``process`` gets each batch and returns what to emit now (possibly
    nothing). If ``tick_interval`` is set, ``tick`` runs whenever that many
    seconds of the run's clock (``self.ctx.clock``) have passed since the
    last tick, also when no events arrive; it must emit everything due at
    ``ctx.clock.now()``, since a virtual clock may jump several intervals at
    once. ``finish`` runs once at end of stream and returns what is still held
    (open windows).

    An operator that has seen enough (a window operator after its last
    window) calls :meth:`request_pipeline_stop`. An operator that reads
    fields of its input by name says which in :meth:`reads_fields`, so a
    plan can check them before anything runs.

    Side records (:class:`~flowtrace.records.SideRecord`) from upstream
    never reach ``process`` (nor the batches an :class:`AsyncOperator`
    reads): the runtime sends them on ahead of what the operator emits for
    their batch (:mod:`flowtrace.routing`), unless the class sets
    ``accepts_side_records = True`` and handles them itself.
    """

    accepts_side_records: ClassVar[bool] = False
    holds_events: ClassVar[bool] = True
    """Whether what it emits for a batch may come after the ``process`` call
    for that batch (windows, joins). Operators that emit everything at once
    (filter, map) set it False, so receipts pass them at once; receipts wait
    in front of the others until ``finish`` (see :mod:`flowtrace.routing`)."""
    tick_interval: float | None = None
    pipeline_stop_requested: bool = False
    runs_as_task: ClassVar[bool] = False
    """True for :class:`AsyncOperator`: the run calls ``setup``/``run``/``teardown``."""

    def open(self, ctx: StageContext) -> None:
        """Called once before the first batch, on the run's own copy."""
        self.ctx = ctx
        self.pipeline_stop_requested = False

    def request_pipeline_stop(self) -> None:
        """Ask the run to stop as :meth:`Run.stop <flowtrace.runtime.Run.stop>`
        does: the source stops, what is in flight still flows through
        ``process``, then ``finish`` runs. Takes effect when the current call
        returns."""
        self.pipeline_stop_requested = True

    @abstractmethod
    def process(self, batch: list[In]) -> Sequence[Out]: ...

    def tick(self) -> Sequence[Out]:
        return ()

    def finish(self) -> Sequence[Out]:
        return ()

    def close(self) -> None:
        """Called once at the end, also on failure."""

    def reads_fields(self) -> tuple[str, ...]:
        """Names of input event fields this operator reads (empty: none, or
        not known, as for a plain function)."""
        return ()

    def output_type(self, input_type: type[Any] | None) -> type[Any] | None:
        """The type of what it emits when its input is of ``input_type``;
        None when not known. Operators that pass events on unchanged return
        ``input_type``."""
        return None

    def kernel_form(self) -> KernelForm | UserOnly:
        """What this operator is inside a BPF program, when it directly
        follows a kernel source (or operators placed there): a plain
        description (:mod:`flowtrace.kernel_forms`), or :class:`UserOnly`
        saying why it runs in user space. None of it by default."""
        return UserOnly(f"{type(self).__name__} has no in-kernel form (Python code)")


class AsyncOperator(Operator[In, Out]):
    """An operator that runs as its own task, for logic that awaits or is
    written as one loop over the stream (see
    :func:`flowtrace.operators.stream_operator`).

    The run calls ``open(ctx)``, awaits :meth:`setup`, then awaits
    :meth:`run` with the input batches and an ``emit`` function, then awaits
    :meth:`teardown` (once ``setup`` has returned: also on failure or
    cancellation, shielded from it), and finally calls ``close()``. ``tick``
    and ``tick_interval`` are not used (await in ``run`` instead); ``process``
    must not be called. Each batch ``run`` takes from ``batches`` counts as received;
    ``await emit(list)`` sends a batch on (waiting when downstream is full).
    If ``run`` returns before its input ends, the run is asked to stop
    and the rest of the input is counted as dropped (``after_operator_end``).
    """

    runs_as_task: ClassVar[bool] = True

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


class Sink(_Stage, ABC, Generic[In]):
    """Consumes batches: prints, writes, forwards.

    ``close`` flushes what the sink buffers; what it could not deliver is
    counted in ``ctx.stats.dropped``.
    """

    def reports_pipeline(self) -> bool:
        """Whether its output includes the run's own counters (attach, loss
        and summary records, read from ``ctx.pipeline``): a fan-out closes
        such sinks after the others, so their summaries include what the
        others dropped while closing."""
        return False

    def prints_text(self) -> bool:
        """Whether it prints text for people on standard output (the
        console): ``flowtrace run -o ndjson`` and ``--live`` put their own
        output in place of such sinks."""
        return False

    def results_only(self) -> Sink[In]:
        """This sink writing results only, without headers or other lines
        for people (``flowtrace run --quiet``); by default itself."""
        return self

    async def open(self, ctx: StageContext) -> None:
        """Called once before the first batch, on the run's own copy."""
        self.ctx = ctx

    @abstractmethod
    async def write(self, batch: list[In]) -> None: ...

    async def close(self) -> None:
        """Flush and release; called once, also on failure."""


class Flow(Generic[T]):
    """A source and the operators after it; ``| sink`` makes a Pipeline."""

    def __init__(self, source: Source[Any], operators: Sequence[Operator[Any, Any]]) -> None:
        self.source = source
        self.operators = tuple(operators)
        _check_fields(source, self.operators)

    @overload
    def __or__(self, other: Operator[T, U]) -> Flow[U]: ...
    @overload
    def __or__(self, other: Sink[T]) -> Pipeline: ...
    def __or__(self, other: Operator[T, U] | Sink[T]) -> Flow[U] | Pipeline:
        if isinstance(other, Operator):
            return Flow(self.source, (*self.operators, other))
        if isinstance(other, Sink):
            return Pipeline(self.source, self.operators, other)
        raise PipelineDefinitionError(
            f"cannot pipe into {type(other).__name__}: expected an Operator or a Sink"
        )


class Pipeline:
    """A source, operators and a sink, as a plan to run: immutable once built.

    :meth:`run` runs it (any number of times, also at once): each run makes
    its own stage objects and counters from the plan. The core installs
    no signal handlers and keeps no global state: run it in any
    anyio-compatible event loop; ``await task_group.start(pipeline.run)``
    returns the :class:`~flowtrace.runtime.Run` (live ``stats``, ``stop()``).
    """

    __slots__ = (
        "capacity", "clock", "latency", "name", "operators", "overflow", "pushdown", "sink",
        "source",
    )

    source: Source[Any]
    operators: tuple[Operator[Any, Any], ...]
    sink: Sink[Any]
    capacity: int
    overflow: Overflow
    clock: Clock
    name: str
    """What the pipeline is called (a pipeline file's name; empty when not
    named): runs carry it in their counters, metrics label series with it."""
    pushdown: bool
    latency: float | None
    """Seconds a kernel source may hold a record on purpose: to gather it
    into a batch with others (default 10 ms, see :mod:`flowtrace.gathering`)
    and to put it in timestamp order (default 1 ms, never more than
    ``latency``, see :mod:`flowtrace.reorder`); a record waits at most the
    sum of the two. None: those defaults; 0: never hold."""

    def __init__(
        self,
        source: Source[Any],
        operators: Sequence[Operator[Any, Any]],
        sink: Sink[Any],
        *,
        capacity: int = 64,
        overflow: Overflow = Overflow.BLOCK,
        clock: Clock | None = None,
        name: str = "",
        pushdown: bool = True,
        latency: float | None = None,
    ) -> None:
        if capacity < 1:
            raise PipelineDefinitionError("edge capacity must be at least one batch")
        seconds = isinstance(latency, int | float) and not isinstance(latency, bool)
        if latency is not None and not (seconds and 0 <= latency <= 60):
            raise PipelineDefinitionError(
                f"latency={latency!r}: give seconds from 0 to 60 (e.g. latency=0.01)"
            )
        _check_fields(source, operators)
        setter = object.__setattr__
        setter(self, "source", source)
        setter(self, "operators", tuple(operators))
        setter(self, "sink", sink)
        setter(self, "capacity", capacity)
        setter(self, "overflow", overflow)
        setter(self, "clock", clock or MonotonicClock())
        setter(self, "name", name)
        setter(self, "pushdown", pushdown)
        setter(self, "latency", latency)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Pipeline is immutable: use replace({name}=...) for a new one")

    def replace(
        self,
        *,
        source: Source[Any] | None = None,
        sink: Sink[Any] | None = None,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        clock: Clock | None = None,
        name: str | None = None,
        pushdown: bool | None = None,
        latency: float | None = None,
    ) -> Pipeline:
        """A new plan with some parts replaced (runs never share state, so
        both plans can run at the same time)."""
        return Pipeline(
            source or self.source,
            self.operators,
            sink or self.sink,
            capacity=capacity or self.capacity,
            overflow=overflow or self.overflow,
            clock=clock or self.clock,
            name=self.name if name is None else name,
            pushdown=self.pushdown if pushdown is None else pushdown,
            latency=self.latency if latency is None else latency,
        )

    def placement(self) -> Placement:
        """Where each stage runs: the operators after a kernel source that
        have an in-kernel form run in its BPF program, unless ``pushdown``
        is off (see :mod:`flowtrace.placement`). Worked out afresh for each
        run; attaches nothing."""
        return self.source.placement(self.operators, self.pushdown)

    def places(self, placement: Placement | None = None) -> list[Place]:
        """Each stage, where it runs and why (``flowtrace explain --json``)."""
        placement = placement or self.placement()
        sink = Place(self.sink.stage_name(), "user", "sinks run in user space")
        return [*placement.places, sink]

    def describe(self) -> list[str]:
        """What would run, without running it (for ``flowtrace explain``):
        the source, then each operator with where it runs and why, then the sink.
        Where the kernel's description cannot be read (not root), the plan
        as written, saying why its probes and placement are not resolved."""
        try:
            placement = self.placement()
            lines: list[str] = placement.source.describe()
        except KernelUnreadable as unreadable:
            lines = [f"source {self.source.stage_name()}: not resolved: {unreadable}"]
            lines += [f"operator {op.stage_name()}: placed when run" for op in self.operators]
        else:
            lines += [f"operator {p.stage} ({p.where}): {p.why}" for p in placement.places[1:]]
        lines.append(f"sink {self.sink.stage_name()}")
        return lines

    async def run(
        self,
        *,
        duration: float | None = None,
        report: Callable[[str], None] | None = None,
        task_status: TaskStatus[Run] = anyio.TASK_STATUS_IGNORED,
    ) -> PipelineStats:
        """Run once, to completion (see :meth:`flowtrace.runtime.Run.run`):
        until the source ends, the run is stopped, or ``duration`` seconds
        pass. Returns the run's final counters; started with
        ``task_group.start`` it hands the caller the :class:`Run` once the
        source is producing."""
        return await Run(self).run(duration=duration, report=report, task_status=task_status)


def field_names(event: type[Any]) -> tuple[str, ...] | None:
    """The names an operator can read from events of type ``event``: a
    msgspec Struct's fields and properties; None for other types."""
    fields: tuple[str, ...] | None = getattr(event, "__struct_fields__", None)
    if fields is None:
        return None
    properties = [n for n in dir(event) if isinstance(getattr(event, n, None), property)]
    return (*fields, *(p for p in properties if p not in fields))


def _check_fields(source: Source[Any], operators: Sequence[Operator[Any, Any]]) -> None:
    """Check every field name the operators read against the types of the
    events reaching them, where those are known: a field must be one of them
    has (a source over several probes emits several types, and a join reads
    its start key from one and its complete key from another). Raises
    :class:`PipelineDefinitionError` naming the operator, the field and the
    fields there are. Where the source's types cannot be known yet (their
    kernel description needs root) nothing is checked; a replay rebuilds the
    plan with the recording's types, and is checked then."""
    if not any(op.reads_fields() for op in operators):
        return  # nothing to check: do not ask the source (its types may need tracefs)
    try:
        types: tuple[type[Any], ...] = source.event_types()
    except KernelUnreadable:
        return
    for op in operators:
        _check_operator(op, types)
        outputs = tuple(op.output_type(t) for t in types)
        passed = len(types) == 1 or all(o is t for o, t in zip(outputs, types, strict=True))
        types = tuple(t for t in outputs if t is not None) if passed else ()


def _check_operator(op: Operator[Any, Any], types: tuple[type[Any], ...]) -> None:
    named = [field_names(t) for t in types]
    if not types or any(n is None for n in named):
        return
    known = list(dict.fromkeys(f for n in named for f in n or ()))
    for field in op.reads_fields():
        if field not in known:
            if len(types) == 1:
                problem = f"{types[0].__name__} has no field {field!r}; its fields"
            else:
                kinds = ", ".join(t.__name__ for t in types)
                problem = f"none of {kinds} has a field {field!r}; their fields"
            raise PipelineDefinitionError(f"{op.stage_name()}: {problem}: {', '.join(known)}")
