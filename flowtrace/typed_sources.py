"""Typed sources over tracepoints, from the kernel's own formats: no C.

::

    tracepoint("block:block_rq_issue")      # fields from the tracepoint's format file
    syscall_entry("write")                  # syscalls:sys_enter_write
    syscall_exit("write")                   # syscalls:sys_exit_write
    tracepoints("block:block_rq_issue", "block:block_rq_complete")  # one buffer

Each returns a :class:`TracepointSource`, a
:class:`~flowtrace.kernel_source.KernelSource` whose event type is a
generated :class:`~flowtrace.events.Event` subclass, so the record struct,
the code filling it and the decoder come from the usual layout machinery;
the generated probe body copies each field from the record. Raw
tracepoints, uprobes and USDT take typed argument declarations instead
(:mod:`flowtrace.argument_sources`).

**Fields of a generated event**: the task fields ``ts``, ``pid``, ``tid``,
``comm``, then every non-``common_`` field of the format file, named by the
rule of :mod:`flowtrace.typed_events` (a format field keeps its name, a task
field of the same name becomes ``task_<name>``). Leading underscores are
dropped from format field names (``__syscall_nr`` is ``syscall_nr``).
Types from the format: integers by size and sign (``u8`` .. ``s64``);
pointers as ``u64`` addresses; ``char[N]`` arrays as ``Char(N)`` strings;
``__data_loc char[]`` strings as ``Char(string_size)``, read from where the
record says they are (offset in the low 16 bits, length in the high 16).
Fields of other types (byte arrays, ``__rel_loc``) are not read;
``describe()`` lists them.

**Declared events.** With ``event=MyEvent`` the event type is yours (for
mypy), checked against the format as :func:`flowtrace.typed_events.check_declared`
says; integers convert as C assignment converts, so ``fd: s32`` reads a
syscall's 8-byte descriptor argument. A pointer field declared ``Char(N)``
reads the string it points to (user memory for ``syscalls:*``, kernel
memory otherwise). A field that does not fit raises
:class:`~flowtrace.errors.EventDefinitionError` naming it and listing the
fields there are.

**Laziness.** Building a source reads nothing: the format files (readable
by root only) are read when the source is first planned, explained or run,
or its ``event`` is asked for. A replay rebuilds generated event types from
the recording instead (see :func:`flowtrace.recording.replay_event`), so
replaying needs no root. Failing to read tracefs raises
:class:`~flowtrace.errors.AttachError`, one line naming the tracepoint and
the fix.
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from . import ktypes
from .errors import PipelineDefinitionError
from .events import C_RESERVED, Event, event_type
from .kernel_source import KernelSource, SourceDefinition
from .ktypes import KernelType
from .outputs import buffer_output
from .probes import Probe, Tracepoint
from .tagged import TAG, member_field, tagged_event
from .tracefs_format import FieldKind, FormatField, TracepointFormat, read_format
from .typed_events import check_declared, class_name, with_task_fields

__all__ = [
    "DEFAULT_STRING_SIZE",
    "TracepointDefinition",
    "TracepointSource",
    "define_tracepoint",
    "syscall_entry",
    "syscall_exit",
    "tracepoint",
    "tracepoints",
]

E = TypeVar("E", bound=Event)

DEFAULT_STRING_SIZE = 128
"""Bytes kept of each ``__data_loc`` string of a generated event (NUL
included). The record is built on the BPF stack (512 bytes), so a
tracepoint with two such strings (``sched:sched_process_fork``) still fits;
declare an event to keep more of one string."""

# -- tracepoints ---------------------------------------------------------------


@dataclass(frozen=True)
class _Readable:
    """A format field, the name it has in events, and its generated type."""

    field: FormatField
    name: str
    ktype: KernelType


def _readable(fmt: TracepointFormat, string_size: int) -> tuple[list[_Readable], list[FormatField]]:
    """The fields of ``fmt`` a program can read, and those it cannot."""
    readable, unread = [], []
    for f in fmt.own_fields:
        name = f.name.lstrip("_")
        if keyword.iskeyword(name) or name in C_RESERVED:
            name += "_"  # ``from`` (syscalls:sys_enter_ioperm) becomes ``from_``
        if f.kind is FieldKind.INTEGER:
            readable.append(_Readable(f, name, ktypes.integer(f.size, f.signed)))
        elif f.kind is FieldKind.POINTER:
            readable.append(_Readable(f, name, ktypes.integer(f.size, False)))
        elif f.kind is FieldKind.CHARS:
            readable.append(_Readable(f, name, ktypes.Char(f.size)))
        elif f.kind is FieldKind.STRING:
            readable.append(_Readable(f, name, ktypes.Char(string_size)))
        else:
            unread.append(f)
    return readable, unread


def _read_field(
    r: _Readable, target: str, declared: KernelType, user_memory: bool
) -> str:
    """C copying format field ``r`` of the record (``ctx``) into ``e.<target>``."""
    f = r.field
    at = f"(char *)ctx + {f.offset}"
    if f.kind is FieldKind.STRING:
        return (
            f"{{ u32 loc = *(u32 *)({at});  // {f.describe()}: offset | length << 16\n"
            f"  bpf_probe_read_kernel_str(&e.{target}, sizeof(e.{target}),"
            f" (char *)ctx + (loc & 0xFFFF)); }}"
        )
    if f.kind is FieldKind.CHARS:
        size = min(f.size, declared.size)
        return f"bpf_probe_read_kernel(&e.{target}, {size}, {at});  // {f.describe()}"
    c_type = ktypes.integer(f.size, f.signed).c_type
    value = f"*({c_type} *)({at})"
    if f.offset % f.size:
        value = f"({{ {c_type} v = 0; bpf_probe_read_kernel(&v, sizeof(v), {at}); v; }})"
    if declared.is_string:  # a pointer field declared Char(N): the string it points to
        read = "bpf_probe_read_user_str" if user_memory else "bpf_probe_read_kernel_str"
        return f"{read}(&e.{target}, sizeof(e.{target}), (void *){value});  // {f.describe()}"
    return f"e.{target} = {value};  // {f.describe()}"


@dataclass(frozen=True)
class TracepointDefinition:
    """What a tracepoint source emits and how: the event type, the probe whose
    body copies each field from the record, and the fields left unread."""

    event: type[Any]
    probe: Probe
    unread: tuple[FormatField, ...]


def define_tracepoint(
    fmt: TracepointFormat,
    *,
    event: type[Event] | None = None,
    string_size: int = DEFAULT_STRING_SIZE,
    tag: int | None = None,
) -> TracepointDefinition:
    """The event type (generated, or ``event`` checked against ``fmt``) and
    probe of a source over the tracepoint ``fmt`` describes. With ``tag``
    the probe fills member ``tag`` of a tagged record (see :func:`tagged_event`)."""
    readable, unread = _readable(fmt, string_size)
    by_name = {r.name: r for r in readable}
    what = f"{fmt.category}:{fmt.name}"
    own = [(r.name, r.ktype) for r in readable]
    if event is None:
        event = event_type(class_name(fmt.name), with_task_fields(own))
        read = own
    else:
        pointers = {r.name for r in readable if r.field.kind is FieldKind.POINTER}
        read = check_declared(event, dict(with_task_fields(own)), f"tracepoint {what}", pointers)
    user_memory = fmt.category == "syscalls"
    lines = [] if tag is None else [f"e.{TAG} = {tag};"]
    lines += [
        _read_field(by_name[field], member_field(tag, field), declared, user_memory)
        for field, declared in read
    ]
    probe = Probe(what, Tracepoint(fmt.category, fmt.name), body="\n".join(lines))
    return TracepointDefinition(event, probe, tuple(unread))


class TracepointSource(KernelSource[E], Generic[E]):
    """A kernel source over one tracepoint or several, each with its event
    type generated from the tracepoint's format file (or declared, and
    checked against it).

    Several tracepoints share one buffer, so their events arrive in the
    order they happened (the order of a request's issue and completion
    holds): each record carries a tag saying which event type it is, and
    the source emits each as its own type. ``event_types()`` lists the
    types, ``event`` is the record type (the one event type for one
    tracepoint).

    Building one reads nothing. The first use of anything derived from the
    formats (``event``, ``event_types()``, ``probes``, ``layout``, planning,
    ``describe``, running) reads the format files once and keeps the
    :meth:`definition` they give; a source of one tracepoint with a declared
    event answers ``event`` without reading.
    """

    def __init__(
        self,
        members: Sequence[tuple[str, type[Event] | None]],
        *,
        string_size: int = DEFAULT_STRING_SIZE,
        source_name: str = "",
        transport: str = "auto",
        buffer_pages: int = 1024,
        cflags: Sequence[str] = (),
    ) -> None:
        if not 0 < string_size <= 4096:
            raise PipelineDefinitionError(f"string_size must be 1 to 4096 bytes, not {string_size}")
        if not members:
            raise PipelineDefinitionError("name at least one tracepoint")
        self.tracepoints = tuple(name for name, _ in members)
        self.name = source_name or " + ".join(self.tracepoints)
        self.cflags = tuple(cflags)
        self._members = [(*_split(name), declared) for name, declared in members]
        self._string_size = string_size
        self._output = buffer_output(transport, buffer_pages)
        self._defined: tuple[SourceDefinition[E], tuple[FormatField, ...]] | None = None

    def definition(self) -> SourceDefinition[E]:
        """Read from the format files on first use (see the class docstring)."""
        return self._define()[0]

    @property
    def unread(self) -> tuple[FormatField, ...]:
        """Format fields no event field reads (no kernel type for them)."""
        return self._define()[1]

    @property
    def event(self) -> type[E]:
        """The record type; a declared event of one tracepoint is known
        without reading its format."""
        declared = [d for _, _, d in self._members]
        if len(declared) == 1 and declared[0] is not None:
            return declared[0]  # type: ignore[return-value]
        return self.definition().event

    def replay_types(self) -> tuple[type[Any] | str, ...]:
        """The event types a replay of this source reads: declared types as
        they are, generated ones by name, to be rebuilt from the recording's
        header instead of read from the kernel (see
        :func:`flowtrace.recording.replay_event`)."""
        return tuple(d or class_name(name) for _, name, d in self._members)

    def _define(self) -> tuple[SourceDefinition[E], tuple[FormatField, ...]]:
        if self._defined is not None:
            return self._defined
        tagged = len(self._members) > 1
        definitions = [
            define_tracepoint(
                read_format(category, name),
                event=declared,
                string_size=self._string_size,
                tag=tag if tagged else None,
            )
            for tag, (category, name, declared) in enumerate(self._members)
        ]
        events = tuple(d.event for d in definitions)
        record: type[Any] = events[0]
        layout = self._output.layout(record)
        if tagged:
            record, layout = tagged_event(events)
        probes = tuple(d.probe for d in definitions)
        unread = tuple(f for d in definitions for f in d.unread)
        self._defined = (SourceDefinition(record, probes, "", self._output, layout, events), unread)
        return self._defined

    def describe(self) -> list[str]:
        lines = super().describe()
        events = self.event_types()
        if len(events) > 1:
            names = ", ".join(e.__name__ for e in events)
            lines[0] = lines[0].replace(self.event.__name__, names, 1)
        if self.unread:
            text = ", ".join(f.describe() for f in self.unread)
            lines.append(f"  fields not read (no kernel type for them): {text}")
        return lines


def _split(name: str) -> tuple[str, str]:
    category, sep, event = name.partition(":")
    if not sep or not category or not event or ":" in event:
        raise PipelineDefinitionError(
            f"tracepoint {name!r}: give it as category:name (syscalls:sys_enter_write)"
        )
    return category, event


@overload
def tracepoint(
    name: str,
    *,
    event: type[E],
    string_size: int = ...,
    source_name: str = ...,
    transport: str = ...,
    buffer_pages: int = ...,
) -> TracepointSource[E]: ...
@overload
def tracepoint(
    name: str,
    *,
    event: None = None,
    string_size: int = ...,
    source_name: str = ...,
    transport: str = ...,
    buffer_pages: int = ...,
) -> TracepointSource[Any]: ...
def tracepoint(
    name: str,
    *,
    event: type[E] | None = None,
    string_size: int = DEFAULT_STRING_SIZE,
    source_name: str = "",
    transport: str = "auto",
    buffer_pages: int = 1024,
) -> TracepointSource[Any]:
    """Every hit of the tracepoint ``name`` (``"category:name"``), with its
    fields (see the module docstring for the generated event type and the
    naming rule). ``string_size`` bytes are kept of ``__data_loc`` strings;
    ``source_name`` names the stage (default: the tracepoint)."""
    return TracepointSource(
        [(name, event)],
        string_size=string_size,
        source_name=source_name,
        transport=transport,
        buffer_pages=buffer_pages,
    )


def tracepoints(
    *names: str | tuple[str, type[Event]],
    string_size: int = DEFAULT_STRING_SIZE,
    source_name: str = "",
    transport: str = "auto",
    buffer_pages: int = 1024,
) -> TracepointSource[Any]:
    """Every hit of each tracepoint in ``names``, through one buffer, so events
    arrive in the order they happened, each as its tracepoint's event type:
    generated (a ``"category:name"``) or declared (a ``("category:name",
    MyEvent)`` pair). For a start/complete pair followed by
    :func:`~flowtrace.operators.join`."""
    return TracepointSource(
        [(n, None) if isinstance(n, str) else n for n in names],
        string_size=string_size,
        source_name=source_name,
        transport=transport,
        buffer_pages=buffer_pages,
    )


@overload
def syscall_entry(name: str, *, event: type[E], transport: str = ...) -> TracepointSource[E]: ...
@overload
def syscall_entry(
    name: str, *, event: None = None, transport: str = ...
) -> TracepointSource[Any]: ...
def syscall_entry(
    name: str, *, event: type[E] | None = None, transport: str = "auto"
) -> TracepointSource[Any]:
    """Entry of syscall ``name``: ``tracepoint("syscalls:sys_enter_<name>")``,
    whose fields are the syscall's arguments (pointers as addresses)."""
    return tracepoint(f"syscalls:sys_enter_{name}", event=event, transport=transport)


@overload
def syscall_exit(name: str, *, event: type[E], transport: str = ...) -> TracepointSource[E]: ...
@overload
def syscall_exit(
    name: str, *, event: None = None, transport: str = ...
) -> TracepointSource[Any]: ...
def syscall_exit(
    name: str, *, event: type[E] | None = None, transport: str = "auto"
) -> TracepointSource[Any]:
    """Return of syscall ``name``: ``tracepoint("syscalls:sys_exit_<name>")``,
    with its return value ``ret`` (s64)."""
    return tracepoint(f"syscalls:sys_exit_{name}", event=event, transport=transport)
