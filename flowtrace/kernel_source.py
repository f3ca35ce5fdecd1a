"""A source backed by a bcc program: probes in, typed event batches out."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import msgspec

from .codegen import Program, generate
from .context import SourceContext
from .errors import FlowtraceError, KernelError, KernelUnreadable
from .events import Event, Layout, layout_of
from .gathering import DEFAULT_LATENCY, SMALL_BATCH, Gathering
from .in_flight import InFlight
from .kernel import mmapable_arrays
from .kernel_forms import Place, Placement
from .loaded import LoadedProgram
from .outputs import DEFAULT_PAGES, Channel, Output, Reader, buffer_output
from .plan import Choice, resolve
from .probes import Probe
from .reorder import DEFAULT_WINDOW, Reorder
from .stages import Emit, Operator, Source

__all__ = ["KernelSource", "SourceDefinition"]

E = TypeVar("E", bound=msgspec.Struct)

_BATCH_LIMIT = 8192
_LOST_REFRESH = 0.25  # seconds between reads of the lost counters
_DRAIN_GRACE = 0.1  # seconds a stop waits for records still being written


@dataclass(frozen=True)
class SourceDefinition(Generic[E]):
    """What a kernel source compiles: the record type its probes fill, the
    probes, C helpers they share (``prelude``), where records go
    (``output``, with the ``layout`` it writes), and the event types that
    come out (one; several when records carry a tag saying which)."""

    event: type[E]
    probes: tuple[Probe, ...]
    prelude: str
    output: Output
    layout: Layout[Any] | None
    event_types: tuple[type[Any], ...]


class KernelSource(Source[E], Generic[E]):
    """Events of type ``event`` emitted by ``probes``, compiled and attached by bcc.

    On start the probes are resolved against the running kernel (the choice
    of each is reported), the program is compiled off the event loop, and the
    chosen attach points are attached. Records reach user space through the
    ``output`` (see :mod:`flowtrace.outputs`): by default a ring buffer
    (``transport="auto"`` picks it where the kernel has one) or per-CPU perf
    buffers sharing the same memory, ``buffer_pages`` pages (4 MiB by
    default: some 100,000 small records); ``output=TracePipe()`` reads
    ``bpf_trace_printk`` lines instead (see :mod:`flowtrace.trace_pipe`).
    Whatever the output, one loop reads it: batches of up to 8192 events,
    no Python call per record. At high rates it lets records gather into
    batches, each record for at most the pipeline's ``latency`` (10 ms by
    default); at low rates (below 1,600 records/s with that bound) each
    record goes on as soon as the loop wakes for it (see
    :mod:`flowtrace.gathering`). Records the kernel could not output are
    counted and reported as ``stats.lost``, refreshed while running.

    Events with a ``bpf_ktime_get_ns()`` timestamp reach the first operator
    in timestamp order when several CPUs write them: each is held until the
    reader's clock, read before the read that brought it, is ``reorder``
    seconds (default 0.001; never more than the pipeline's ``latency``)
    past it, and one arriving later than that is passed on and counted as
    ``late`` (see :mod:`flowtrace.reorder`); ``reorder=None`` passes events
    on as read. So ``Pipeline(latency=0)`` holds no record on purpose.
    The program counts its emitting probes in flight (on kernels that let
    user space map arrays, Linux 5.5+), and when none is, events
    timestamped before the reader's clock are released at once without
    waiting for the window (the in-flight rule of that module).

    On stop, the probes are detached first, then what the output already
    holds is read and emitted, waiting up to 0.1 s for records still being
    written; what is left after that is counted as ``unread_at_stop``. Probes
    are detached and the output released on every exit path. The source
    keeps no state of a run: each run builds its own program and channel, so
    one source may run several times, also at once.
    """

    reorder: float | None = DEFAULT_WINDOW
    """Seconds events are held to put them in timestamp order (None: off)."""

    def __init__(
        self,
        event: type[E],
        *probes: Probe,
        prelude: str = "",
        name: str = "",
        transport: str | None = None,
        buffer_pages: int | None = None,
        cflags: Sequence[str] = (),
        output: Output | None = None,
        reorder: float | None = DEFAULT_WINDOW,
    ) -> None:
        if output is None:
            pages = DEFAULT_PAGES if buffer_pages is None else buffer_pages
            output = buffer_output(transport or "auto", pages)
        elif transport is not None or buffer_pages is not None:
            raise ValueError("give either output= or transport=/buffer_pages=, not both")
        self.name = name or event.__name__
        self.cflags = tuple(cflags)
        self.reorder = reorder
        self._definition = SourceDefinition(
            event, probes, prelude, output, output.layout(event), (event,)
        )

    def definition(self) -> SourceDefinition[E]:
        """What this source compiles (a subclass may work it out on first use)."""
        return self._definition

    @property
    def event(self) -> type[E]:
        """The record type its probes fill."""
        return self.definition().event

    @property
    def probes(self) -> tuple[Probe, ...]:
        return self.definition().probes

    @property
    def output(self) -> Output:
        return self.definition().output

    @property
    def layout(self) -> Layout[Any] | None:
        return self.definition().layout

    def event_type(self) -> type[E]:
        return self.event

    def event_types(self) -> tuple[type[Any], ...]:
        return self.definition().event_types

    def generated_code(self) -> str:
        return self.program().text

    def plan(self) -> list[Choice]:
        """Resolve every probe on this kernel without attaching (may raise AttachError)."""
        return resolve(self.probes)

    def program(self, choices: Sequence[Choice] | None = None) -> Program:
        """The generated C program for ``choices`` (default: this kernel's plan),
        as a run would build it."""
        chosen = self.plan() if choices is None else choices
        return self._program(chosen, self.output.channel(self.layout))

    def _program(self, choices: Sequence[Choice], channel: Channel) -> Program:
        prelude = self.definition().prelude
        # probes count themselves in flight for the reorder, where the reader
        # can map the counts (Linux 5.5+; else the window alone applies)
        in_flight = self._reorders(channel) and mmapable_arrays()
        return generate(self.layout, choices, prelude=prelude, output=channel, in_flight=in_flight)

    def describe(self) -> list[str]:
        lines = [f"source {self.name}: {self.output.describe(self.event)}"]
        lines += [f"  {choice.describe()}" for choice in self.plan()]
        return lines

    def placement(
        self, operators: Sequence[Operator[Any, Any]], pushdown: bool = True
    ) -> Placement:
        """Where this source and ``operators`` run: the longest prefix of
        ``operators`` with an in-kernel form runs in this source's program
        (see :mod:`flowtrace.placement`); the source returned is one whose
        program does so."""
        own = Place(self.stage_name(), "kernel", "a BPF program attached to its probes")
        if not operators:
            return Placement((own,), self, 0)
        why = self._no_pushdown(pushdown)
        if why is not None:
            places = (own, *(Place(op.stage_name(), "user", why) for op in operators))
            return Placement(places, self, 0)
        # imported here: a source without operators to place needs none of it
        from .kernel_view import record_view
        from .map_output import ChainOutput
        from .placement import place_operators

        layout = self.layout
        assert layout is not None
        placed = place_operators(operators, layout, record_view(layout, self.event_types()))
        places = (own, *placed.places)
        if placed.chain is None:
            return Placement(places, self, 0)
        names = tuple(op.stage_name() for op in operators[: placed.in_kernel])
        output = ChainOutput(self.output, placed.chain, names)
        return Placement(places, _WithOutput(self, output), placed.in_kernel)

    def _no_pushdown(self, pushdown: bool) -> str | None:
        """Why no operator can run in this source's program, if so."""
        if not pushdown:
            return "pushdown is off (Pipeline(pushdown=False), --no-pushdown)"
        try:
            layout = self.layout
        except KernelUnreadable:
            raise  # not root: nothing can be placed here, nor run
        except (FlowtraceError, OSError) as exc:
            return f"the kernel record is not known here ({exc})"
        if not self.output.takes_operators:  # its own program (counters, stacks, conversion)
            return f"its output ({type(self.output).__name__}) takes no operators in the kernel"
        if layout is None:
            return "the source's probes print lines (trace_pipe) instead of filling a record"
        return None

    async def run(self, ctx: SourceContext, emit: Emit[E]) -> None:
        choices = self.plan()
        channel = self.output.channel(self.layout)
        program = self._program(choices, channel)
        loaded = LoadedProgram()
        reader: Reader | None = None
        reorder = self._reorder(ctx.latency) if self._reorders(channel) else None
        in_flight: InFlight | None = None
        try:
            channel.open()
            await anyio.to_thread.run_sync(loaded.load, program, self.cflags)
            reader = channel.connect(loaded)
            if program.in_flight is not None and reorder is not None:
                in_flight = InFlight(loaded.table(program.in_flight))
            # the run starts now: outputs that failed before the channel was
            # connected (perf rings not yet in place) are not part of it
            loaded.lost_before_start = loaded.lost()
            # the stop detaches at once, also while emit waits on a full edge
            ctx.call_on_stop(loaded.detach_quietly)
            ctx.report(f"reading {channel.describe()}")
            for choice in choices:
                ctx.report(f"attached {choice.describe()}")
            ctx.ready()
            channel.started(ctx)
            await self._pump(ctx, emit, loaded, reader, reorder, in_flight, channel)
        finally:
            try:
                # on every exit, cancellation included: detach, then count what
                # the kernel lost and what was left unread, then free
                loaded.detach_quietly()
                if reader is not None:
                    # the program's counters, also when the run was cut off
                    channel.refresh(ctx, final=True)
                    ctx.stats.lost = loaded.lost() + reader.lost()
                    if skipped := loaded.skipped():
                        ctx.report(
                            f"{skipped} probe runs skipped by the kernel while another BPF"
                            " program ran on their CPU (counted as lost)"
                        )
                    unread = reader.unread()  # taken in, never handed on
                    if not channel.counts_received:
                        ctx.stats.received += unread
                    # dropped where they were left: after the operators the program runs
                    last = ctx.kernel_stages[-1] if ctx.kernel_stages else ctx.stats
                    last.drop("unread_at_stop", unread)
                if reorder is not None:  # cut off while it held events (read, not emitted)
                    ctx.stats.drop("stop_deadline", len(reorder.flush()))
            finally:
                try:
                    if in_flight is not None:
                        in_flight.close()
                    loaded.release()
                finally:
                    channel.close()

    def timestamp_field(self) -> str | None:
        """The field every event type fills with ``bpf_ktime_get_ns()``, if any."""
        names: set[str] = set()
        for event in self.event_types():
            if not (isinstance(event, type) and issubclass(event, Event)):
                return None
            fields = layout_of(event).fields
            filled = [f.name for f in fields if "bpf_ktime_get_ns" in (f.ktype.fill or "")]
            if not filled:
                return None
            names.add(filled[0])
        return names.pop() if len(names) == 1 else None

    def _reorders(self, channel: Channel) -> bool:
        """Whether a run on ``channel`` puts events in timestamp order: when
        several CPUs write and events have a kernel timestamp (events, not
        what a program running operators emits)."""
        if self.reorder is None or channel.counts_received or (os.cpu_count() or 1) < 2:
            return False
        return self.layout is not None and self.timestamp_field() is not None

    def _reorder(self, latency: float | None) -> Reorder:
        """This run's reorder buffer, its window no longer than the pipeline's latency."""
        field = self.timestamp_field()
        assert field is not None and self.reorder is not None
        window = self.reorder if latency is None else min(self.reorder, latency)
        return Reorder(field, window)

    @staticmethod
    async def _pump(
        ctx: SourceContext,
        emit: Emit[Any],
        loaded: LoadedProgram,
        reader: Reader,
        reorder: Reorder | None,
        in_flight: InFlight | None,
        channel: Channel,
    ) -> None:
        stats = ctx.stats
        counting = not channel.counts_received
        next_refresh = 0.0
        latency = DEFAULT_LATENCY if ctx.latency is None else ctx.latency
        gathering = Gathering(latency, reader.capacity)
        # perf rings: a wake-up per record while records come slowly only
        wake_per_record = getattr(reader, "wake_per_record", None)
        small = True  # the last read kept up, so reading the in-flight count pays
        while not ctx.stop_requested:
            now = anyio.current_time()
            # before the read: whatever it leaves in the kernel was committed
            # after this, so the reorder window only has to cover the time a
            # probe takes from its timestamp to its commit
            read_at = time.monotonic_ns()
            # the in-flight rule of flowtrace.reorder: the clock, then the
            # count, then a read to the end of the output
            settled = small and in_flight is not None and in_flight.idle()
            batch = reader.read(_BATCH_LIMIT)
            read = len(batch)
            small = read < SMALL_BATCH
            if reorder is not None:
                whole = read < _BATCH_LIMIT  # else older records may be left behind
                batch = reorder.push(batch, read_at, read_at if settled and whole else None)
                stats.late = reorder.late
            if counting:
                stats.received += read
            pause = gathering.after_read(read, now)
            if wake_per_record is not None:
                wake_per_record(not gathering.fast)
            if batch:
                await emit(batch)
            if now >= next_refresh:  # after the emit: a record just read waits for none of it
                stats.lost = loaded.lost() + reader.lost()
                channel.refresh(ctx)
                next_refresh = now + _LOST_REFRESH
            if pause:  # events the reorder holds come with the next read
                await ctx.sleep(pause)
            elif not batch:
                held = None if reorder is None else reorder.wait(time.monotonic_ns())
                wait = gathering.poll(reader.max_wait)
                await ctx.wait_readable(reader.fd, wait if held is None else min(wait, held))
        loaded.detach()
        channel.detached()
        await _drain(ctx, emit, reader, reorder, counting)


async def _drain(
    ctx: SourceContext,
    emit: Emit[Any],
    reader: Reader,
    reorder: Reorder | None,
    counting: bool,
) -> None:
    """Emit what the output holds after detaching, then what the reorder
    buffer holds. A record still on its way is waited for briefly; what is
    left after that is counted by the caller."""
    deadline = anyio.current_time() + _DRAIN_GRACE
    while anyio.current_time() < deadline:
        batch = reader.read(_BATCH_LIMIT)
        if batch:
            if counting:
                ctx.stats.received += len(batch)
            await emit(batch if reorder is None else reorder.push(batch, time.monotonic_ns()))
        elif reader.pending():
            await anyio.sleep(0.001)
        else:
            break
    if reorder is not None:
        await emit(reorder.flush())
        ctx.stats.late = reorder.late


class _WithOutput(KernelSource[Any]):
    """``base`` with another output: the same probes and record, whose
    program also runs operators (see :meth:`KernelSource.placement`)."""

    def __init__(self, base: KernelSource[Any], output: Output) -> None:
        self.name = base.name
        self.cflags = base.cflags
        self._base = base
        self._definition = dataclasses.replace(base.definition(), output=output)

    async def run(self, ctx: SourceContext, emit: Emit[Any]) -> None:
        try:
            await super().run(ctx, emit)
        except KernelError as exc:
            raise KernelError(
                f"{exc} (its program also runs operators; with --no-pushdown,"
                " Pipeline(pushdown=False), they run in Python)"
            ) from exc

    def describe(self) -> list[str]:
        lines = self._base.describe()
        names = ", ".join(e.__name__ for e in self.event_types())
        describe = getattr(self.output, "describe_types", None)
        if describe is not None:
            lines[0] = f"source {self.name}: {describe(names)}"
        return lines
