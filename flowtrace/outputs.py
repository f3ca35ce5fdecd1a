"""How a kernel source's records leave the kernel and reach its loop.

An :class:`Output` is a source's choice of path, made once and shared by
all its runs: :class:`RingBuffer`, :class:`PerfBuffer`, :class:`AutoBuffer`
(the ring buffer where the kernel has one, else the perf buffer), or
:class:`flowtrace.trace_pipe.TracePipe` (``bpf_trace_printk`` lines). For
each run it makes a fresh :class:`Channel`: the C end compiled into that
run's program, and the :class:`Reader` the source's one loop reads, waits
on, drains and asks for losses (see :class:`flowtrace.kernel_source.KernelSource`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from . import kernel
from .context import SourceContext
from .events import Event, Layout, layout_of
from .loaded import LoadedProgram
from .transport import PerfBufferReader, RingBufferReader

__all__ = [
    "DEFAULT_PAGES",
    "EVENTS_MAP",
    "AutoBuffer",
    "Channel",
    "Output",
    "PerfBuffer",
    "Reader",
    "RingBuffer",
    "buffer_output",
]

EVENTS_MAP = "ft_events"
DEFAULT_PAGES = 1024
"""4 MiB of buffer: some 100,000 small records."""


class Reader(Protocol):
    """The reading end of a run's channel, as the source's loop uses it."""

    @property
    def fd(self) -> int:
        """Becomes readable when records arrive (the loop waits on it)."""
        ...

    @property
    def max_wait(self) -> float:
        """Longest the loop waits on :attr:`fd` before reading again
        (records may arrive without waking it)."""
        ...

    @property
    def capacity(self) -> int:
        """About how many records the kernel holds before it loses some
        (the loop lets records gather for a fraction of its fill time)."""
        ...

    def read(self, limit: int) -> list[Any]:
        """About ``limit`` events ready now, oldest first; never blocks."""
        ...

    def pending(self) -> bool:
        """After a read returned nothing: whether more is on its way (a record
        still being written, a read that stopped at its bound)."""
        ...

    def unread(self) -> int:
        """Records left in the kernel's buffer, to count when a run stops."""
        ...

    def lost(self) -> int:
        """Records lost on the way that the program did not count itself."""
        ...

    def close(self) -> None:
        """Release the reader; it is unusable afterwards."""
        ...


class Channel(ABC):
    """One run's path for records, from its program to the source's loop.

    Made by :meth:`Output.channel` for each run; making one acquires nothing
    (``explain`` asks one for its C). The source calls, in this order:
    :meth:`declarations` and :meth:`probe_body` while generating the program,
    :meth:`open` before the program loads (its probes attach as it loads),
    :meth:`connect` once it is loaded, reads the :class:`Reader` it returns
    until the run ends, and calls :meth:`close` on every exit path,
    whichever step was reached.
    """

    @abstractmethod
    def declarations(self) -> str:
        """C placed before the probes: the output's maps and, for outputs
        whose probes fill a record ``e``, ``ft_submit(void *ctx, struct R *e)``.
        What the program cannot output it counts with ``ft_count_lost()``."""

    def probe_body(self, body: str) -> str:
        """A probe's C body as this output runs it (unchanged by default)."""
        return body

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire what must exist before the probes attach (nothing by default)."""

    counts_received = False
    """True when the channel sets the source's ``received`` itself (its
    program counts records in the kernel) instead of the loop adding up
    what it reads."""

    def started(self, ctx: SourceContext) -> None:  # noqa: B027 - optional hook
        """The run starts (the probes are attached): nothing by default."""

    def refresh(self, ctx: SourceContext, final: bool = False) -> None:  # noqa: B027
        """Copy counters the program keeps into the run's stats, every
        0.25 s and once more (``final``) at the end: nothing by default."""

    def detached(self) -> None:  # noqa: B027 - optional hook
        """The probes are detached; the loop drains the reader next."""

    @abstractmethod
    def connect(self, loaded: LoadedProgram) -> Reader:
        """Start reading the output of ``loaded``."""

    @abstractmethod
    def describe(self) -> str:
        """What is read, once connected (``"the ring buffer, 1024 pages"``)."""

    @abstractmethod
    def close(self) -> None:
        """Release everything, the reader too; safe after any step."""


class Output(ABC):
    """How a kernel source's records reach user space. Immutable: one output
    serves every run of a source, each through its own :class:`Channel`."""

    @abstractmethod
    def layout(self, event: type[Any]) -> Layout[Any] | None:
        """The record the probes fill for a source of ``event``, or None when
        they fill none; raises ValueError when this output cannot carry ``event``."""

    @abstractmethod
    def describe(self, event: type[Any]) -> str:
        """What comes out for a source of ``event``, for ``explain``
        (``"SyncCall via ring buffer, 1024 pages"``)."""

    takes_operators: ClassVar[bool] = True
    """Whether operators may run in the program before this output (pushdown):
    outputs whose records are not the event (converted, counted in maps,
    packets, stacks) say no."""

    @abstractmethod
    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        """A fresh channel for one run; ``layout`` is what :meth:`layout` gave.
        ``submit`` names the C function the program calls to output a
        record (when operators run in the kernel, theirs comes first)."""


@dataclass(frozen=True)
class _Buffer(Output):
    """Records of an :class:`~flowtrace.events.Event` class, through a
    buffer of ``pages`` memory pages (a power of two)."""

    pages: int = DEFAULT_PAGES

    def __post_init__(self) -> None:
        if self.pages < 1 or self.pages & (self.pages - 1):
            raise ValueError(f"buffer_pages must be a power of two, not {self.pages}")

    def layout(self, event: type[Any]) -> Layout[Any]:
        if not issubclass(event, Event):
            raise ValueError(
                f"{event.__name__} is not an Event: a buffer output carries records"
                " of an Event class"
            )
        return layout_of(event)


class _BufferOutput(_Buffer):
    """A buffer of one kind: its C declarations and its reader."""

    kind: ClassVar[str]

    def describe(self, event: type[Any]) -> str:
        return f"{event.__name__} via {self.kind}, {self.pages} pages"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        if layout is None:
            raise ValueError("a buffer output needs the layout of its records")
        return _BufferChannel(self, layout, submit)

    @abstractmethod
    def declarations(self, layout: Layout[Any], submit: str) -> str:
        """The buffer map and the function ``submit`` writing a record of ``layout``."""

    @abstractmethod
    def reader(self, loaded: LoadedProgram, layout: Layout[Any]) -> Reader:
        """A reader of the buffer of ``loaded``."""


def _submit(layout: Layout[Any], output: str, name: str) -> str:
    """``name`` (``ft_submit``): ``output`` the record ``e``, counting a failure as lost."""
    return f"""\
static __always_inline void {name}(void *ctx, struct {layout.c_name} *e) {{
    if ({output} != 0)
        ft_count_lost();
}}
"""


@dataclass(frozen=True)
class RingBuffer(_BufferOutput):
    """A BPF ring buffer shared by all CPUs (Linux 5.8+), mapped into this
    process and decoded in bulk (:class:`~flowtrace.transport.RingBufferReader`)."""

    kind: ClassVar[str] = "the ring buffer"

    def declarations(self, layout: Layout[Any], submit: str) -> str:
        return f"BPF_RINGBUF_OUTPUT({EVENTS_MAP}, {self.pages});\n\n" + _submit(
            layout, f"{EVENTS_MAP}.ringbuf_output(e, sizeof(*e), 0)", submit
        )

    def reader(self, loaded: LoadedProgram, layout: Layout[Any]) -> Reader:
        size = self.pages * os.sysconf("SC_PAGE_SIZE")
        return RingBufferReader(loaded.table(EVENTS_MAP).map_fd, size, layout)


@dataclass(frozen=True)
class PerfBuffer(_BufferOutput):
    """Per-CPU perf buffers sharing ``pages`` pages between the CPUs (plus
    an eighth for the rings that wake the reader per record), for kernels
    without ring buffers (:class:`~flowtrace.transport.PerfBufferReader`)."""

    kind: ClassVar[str] = "per-CPU perf buffers"

    def declarations(self, layout: Layout[Any], submit: str) -> str:
        return f"BPF_PERF_OUTPUT({EVENTS_MAP});\n\n" + _submit(
            layout, f"{EVENTS_MAP}.perf_submit(ctx, e, sizeof(*e))", submit
        )

    def reader(self, loaded: LoadedProgram, layout: Layout[Any]) -> Reader:
        from bcc.utils import get_online_cpus

        cpus = get_online_cpus()
        share = self.pages // len(cpus)
        per_cpu = max(8, 1 << (share.bit_length() - 1)) if share else 8
        return PerfBufferReader(loaded.table(EVENTS_MAP), layout, per_cpu, cpus)


@dataclass(frozen=True)
class AutoBuffer(_Buffer):
    """The ring buffer where the kernel has one, else the perf buffer
    (decided when asked, so building a source probes nothing)."""

    def chosen(self) -> _BufferOutput:
        if kernel.features()["ringbuf"].available:
            return RingBuffer(self.pages)
        return PerfBuffer(self.pages)

    def describe(self, event: type[Any]) -> str:
        return self.chosen().describe(event)

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return self.chosen().channel(layout, submit)


def buffer_output(transport: str = "auto", pages: int = DEFAULT_PAGES) -> Output:
    """The buffer output named by ``transport``: auto, ringbuf or perf."""
    kinds: dict[str, type[_Buffer]] = {
        "auto": AutoBuffer,
        "ringbuf": RingBuffer,
        "perf": PerfBuffer,
    }
    if transport not in kinds:
        raise ValueError(f"transport must be auto, ringbuf or perf, not {transport!r}")
    return kinds[transport](pages)


class _BufferChannel(Channel):
    """A run's buffer: its C end, then (connected) a reader of it."""

    def __init__(self, output: _BufferOutput, layout: Layout[Any], submit: str) -> None:
        self._output = output
        self._layout = layout
        self._submit = submit
        self._reader: Reader | None = None

    def declarations(self) -> str:
        return self._output.declarations(self._layout, self._submit)

    def connect(self, loaded: LoadedProgram) -> Reader:
        self._reader = self._output.reader(loaded, self._layout)
        return self._reader

    def describe(self) -> str:
        return f"{self._output.kind}, {self._output.pages} pages"

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
