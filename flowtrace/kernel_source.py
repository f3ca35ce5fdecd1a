"""A source backed by a bcc program: probes in, typed event batches out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

from . import kernel
from .codegen import EVENTS_MAP, LOST_MAP, Program, generate
from .context import SourceContext
from .errors import AttachError, KernelError, one_line
from .events import Event, layout_of
from .plan import Choice, resolve
from .probes import Probe
from .stages import Emit, Source
from .transport import PerfBufferReader, RingBufferReader, Transport

__all__ = ["KernelSource"]

E = TypeVar("E", bound=Event)

_BATCH_LIMIT = 8192
_LOST_REFRESH = 0.25  # seconds between reads of the program's lost counter
_DRAIN_GRACE = 0.1  # seconds a stop waits for records still being written
_SMALL_BATCH = 512  # a batch this small means the reader is keeping up easily
_MAX_GATHER = 0.01  # seconds events may wait to be read together (their latency)


class KernelSource(Source[E], Generic[E]):
    """Events of type ``event`` emitted by ``probes``, compiled and attached by bcc.

    On start the probes are resolved against the running kernel (the choice
    of each is reported), the program is compiled off the event loop, and the
    chosen attach points are attached. Records come through a ring buffer
    (``transport="auto"`` picks it where the kernel has one) or per-CPU perf
    buffers sharing the same memory, ``buffer_pages`` pages (4 MiB by
    default: some 100,000 small records). They are read in batches of up to
    8192 events; when the reader keeps up easily it lets records gather for
    up to 10 ms rather than waking per record. Records the kernel could not
    write are counted in the program and reported as ``stats.lost``.

    On stop, the probes are detached first, then what is already in the
    buffer is read and emitted. Probes are detached on every exit path.
    """

    def __init__(
        self,
        event: type[E],
        *probes: Probe,
        prelude: str = "",
        name: str = "",
        transport: str = "auto",
        buffer_pages: int = 1024,
        cflags: Sequence[str] = (),
    ) -> None:
        if transport not in ("auto", "ringbuf", "perf"):
            raise ValueError(f"transport must be auto, ringbuf or perf, not {transport!r}")
        if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
            raise ValueError(f"buffer_pages must be a power of two, not {buffer_pages}")
        self.event = event
        self.probes = probes
        self.prelude = prelude
        self.name = name or event.__name__
        self.transport = transport
        self.buffer_pages = buffer_pages
        self.cflags = tuple(cflags)
        self.layout = layout_of(event)

    def event_type(self) -> type[E]:
        return self.event

    def generated_code(self) -> str:
        return self.program().text

    def plan(self) -> list[Choice]:
        """Resolve every probe on this kernel without attaching (may raise AttachError)."""
        return resolve(self.probes)

    def chosen_transport(self) -> str:
        """ "ringbuf" or "perf": the one asked for, or with "auto" the ring
        buffer where the kernel has it."""
        if self.transport != "auto":
            return self.transport
        return "ringbuf" if kernel.features()["ringbuf"].available else "perf"

    def program(self, choices: Sequence[Choice] | None = None) -> Program:
        """The generated C program for ``choices`` (default: this kernel's plan)."""
        return generate(
            self.layout,
            self.plan() if choices is None else choices,
            prelude=self.prelude,
            transport=self.chosen_transport(),
            ring_pages=self.buffer_pages,
        )

    def describe(self) -> list[str]:
        lines = [f"source {self.name}: {self.event.__name__} via {self.chosen_transport()}"]
        lines += [f"  {choice.describe()}" for choice in self.plan()]
        return lines

    async def run(self, ctx: SourceContext, emit: Emit[E]) -> None:
        choices = self.plan()
        program = self.program(choices)
        loaded = LoadedProgram()
        try:
            await anyio.to_thread.run_sync(loaded.load, program, self.cflags)
            reader = loaded.open_reader(self.chosen_transport(), self.layout, self.buffer_pages)
            # the run starts now: outputs that failed before the perf rings were
            # in place (between attach and here) are not part of it
            loaded.lost_before_start = loaded.lost()
            for choice in choices:
                ctx.report(f"attached {choice.describe()}")
            ctx.ready()
            await self._pump(ctx, emit, loaded, reader)
        finally:
            loaded.release()

    async def _pump(
        self, ctx: SourceContext, emit: Emit[E], loaded: LoadedProgram, reader: Transport
    ) -> None:
        stats = ctx.stats
        next_refresh = 0.0
        last_read = anyio.current_time()
        while not ctx.stop_requested:
            now = anyio.current_time()
            if now >= next_refresh:
                stats.lost = loaded.lost()
                next_refresh = now + _LOST_REFRESH
            batch = reader.read(_BATCH_LIMIT)
            if not batch:
                await ctx.wait_readable(reader.fd, reader.max_wait)
                continue
            stats.received += len(batch)
            await emit(batch)  # type: ignore[arg-type]
            if len(batch) < _SMALL_BATCH:
                # The reader is ahead of the producers: let records gather
                # rather than wake per record, for at most a quarter of the
                # time the buffer takes to fill at the rate just seen.
                rate = len(batch) / max(now - last_read, 1e-6)
                await ctx.sleep(min(_MAX_GATHER, 0.25 * reader.capacity / rate))
            last_read = now
        loaded.detach()
        await self._drain(ctx, emit, reader)
        stats.lost = loaded.lost()

    async def _drain(self, ctx: SourceContext, emit: Emit[E], reader: Transport) -> None:
        """Emit what the buffer holds after detaching. A record another CPU is
        still writing is waited for briefly; what is left after that is counted."""
        deadline = anyio.current_time() + _DRAIN_GRACE
        while reader.pending() and anyio.current_time() < deadline:
            batch = reader.read(_BATCH_LIMIT)
            if batch:
                ctx.stats.received += len(batch)
                await emit(batch)  # type: ignore[arg-type]
            else:
                await anyio.sleep(0.001)
        ctx.stats.drop("unread_at_stop", reader.unread())


class LoadedProgram:
    """A compiled bcc program, its attachments, and its output reader.

    Attributes are filled as loading progresses, so :meth:`release` frees
    exactly what exists, whichever step failed or was cancelled.
    """

    def __init__(self) -> None:
        self.bpf: Any = None
        self.reader: Transport | None = None
        self.lost_before_start = 0
        self.usdt_contexts: list[Any] = []

    def load(self, program: Program, cflags: Sequence[str]) -> None:
        try:
            from bcc import BPF
        except ImportError as exc:
            raise KernelError(
                "bcc is not importable: install python3-bpfcc and run flowtrace doctor"
            ) from exc
        # kept for the program's lifetime: a USDT context resets the probes'
        # semaphores when freed, and probes behind a semaphore stop firing
        self.usdt_contexts = [c for point, fn in program.entries for c in point.usdt_contexts(fn)]
        contexts = self.usdt_contexts
        # Held before construction: bcc's constructor may load programs and
        # attach (tracepoints, USDT) before it fails; release() frees those.
        self.bpf = BPF.__new__(BPF)
        try:
            self.bpf.__init__(
                text=program.text.encode(), usdt_contexts=contexts, cflags=list(cflags)
            )
        except Exception as exc:
            raise KernelError(f"bcc could not load the program: {one_line(exc)}") from exc
        for point, fn in program.entries:
            try:
                point.attach(self.bpf, fn)
            except Exception as exc:
                raise AttachError(f"{point.describe()}: {one_line(exc)}") from exc

    def open_reader(self, transport: str, layout: Any, pages: int) -> Transport:
        if transport == "ringbuf":
            table = self.bpf[EVENTS_MAP.encode()]
            self.reader = RingBufferReader(table.map_fd, pages * os.sysconf("SC_PAGE_SIZE"), layout)
        else:
            from bcc.utils import get_online_cpus

            cpus = get_online_cpus()
            # the same memory in all, spread over the CPUs' rings
            share = pages // len(cpus)
            per_cpu = max(8, 1 << (share.bit_length() - 1)) if share else 8
            table = self.bpf[EVENTS_MAP.encode()]
            self.reader = PerfBufferReader(table, layout, per_cpu, cpus)
        return self.reader

    def lost(self) -> int:
        """Records the program could not write to its full buffer since the start."""
        if self.bpf is None:
            return 0
        return int(self.bpf[LOST_MAP.encode()].sum(0).value) - self.lost_before_start

    def detach(self) -> None:
        """Detach every probe but keep the program and maps, so the buffer can be
        drained. Carries on past a failing detach and raises the first failure."""
        bpf = self.bpf
        if bpf is None:
            return
        failures: list[Exception] = []
        steps: list[tuple[Callable[..., object], list[Any]]] = [
            (bpf.detach_kprobe_event, list(bpf.kprobe_fds)),
            (bpf.detach_uprobe_event, list(bpf.uprobe_fds)),
            (bpf.detach_tracepoint, list(bpf.tracepoint_fds)),
            (bpf.detach_raw_tracepoint, list(bpf.raw_tracepoint_fds)),
            (bpf.detach_kfunc, list(bpf.kfunc_entry_fds)),
            (bpf.detach_kretfunc, list(bpf.kfunc_exit_fds)),
            (bpf.detach_lsm, list(bpf.lsm_fds)),
        ]
        for detach, names in steps:
            for name in names:
                try:
                    detach(name)
                except Exception as exc:
                    failures.append(exc)
        for ev_type, ev_config in list(bpf.open_perf_events):
            try:
                bpf.detach_perf_event(ev_type, ev_config)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def release(self) -> None:
        """Detach everything, free the program and the reader; safe in any state,
        and every step runs even when an earlier one fails."""
        bpf, reader = self.bpf, self.reader
        try:
            self.detach()
        finally:
            self.bpf = self.reader = None
            self.usdt_contexts = []
            try:
                if bpf is not None:
                    bpf.close()  # program fds and the module (maps)
            finally:
                if reader is not None:
                    reader.close()
