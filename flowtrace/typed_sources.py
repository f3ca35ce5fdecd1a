"""Typed sources from what the kernel and the program already declare: no C.

::

    tracepoint("block:block_rq_issue")      # fields from the tracepoint's format file
    syscall_entry("write")                  # syscalls:sys_enter_write
    syscall_exit("write")                   # syscalls:sys_exit_write
    raw_tracepoint("sched_switch", args={"preempt": u8})
    uprobe("/usr/bin/prog", "visit", args={"path": Char(64), "n": u64})
    usdt(pid, "node:http__server__request", args={"path": Arg(6, Char(128))})

Each returns a :class:`~flowtrace.kernel_source.KernelSource` whose event
type is a generated :class:`~flowtrace.events.Event` subclass, so the record
struct, the code filling it and the decoder come from the usual layout
machinery; the generated probe body copies each field.

**Fields of a generated event**, in order: the task fields ``ts``
(``ktime_ns``), ``pid`` (``task_pid``, the process id), ``tid``
(``task_tid``) and ``comm`` (``task_comm``); then the tracepoint's own
fields (every non-``common_`` field of its format file) or the declared
arguments, in order.

* **Naming rule**: a tracepoint field or argument keeps its name; a task
  field with the same name becomes ``task_<name>`` (``block:block_rq_issue``
  has its own ``comm``, the command name it records, so the current task's is
  ``task_comm``). Leading underscores are dropped from format field names
  (``__syscall_nr`` is ``syscall_nr``).
* **Types** from the format: integers by size and sign (``u8`` .. ``s64``);
  pointers as ``u64`` addresses; ``char[N]`` arrays as ``Char(N)`` strings;
  ``__data_loc char[]`` strings as ``Char(string_size)`` (read from where the
  record says they are). Fields of other types (byte arrays, ``__rel_loc``)
  are not read; :meth:`~flowtrace.kernel_source.KernelSource.describe` lists
  them.
* **Arguments** are declared as kernel types, in order (``u64``, ``s32``,
  ``Char(64)``...), or as ``Arg(position, type)`` to take argument
  ``position`` (1-based). A ``Char(N)`` argument is a pointer to a string,
  read from user memory for uprobes and USDT, from kernel memory for raw
  tracepoints. Each argument is read into a variable of its declared type:
  USDT arguments must be declared with their size (``s32`` for a C ``int``),
  which is checked against the probe's note when the source is planned.

**Declared events.** With ``event=MyEvent`` the event type is yours (for
mypy). Its fields with automatically filled types (``ktime_ns``,
``task_pid``, ``cpu_id``...) are filled as usual, whatever their name;
every other field must name a field of the tracepoint (or an argument):
strings for strings, integers for integers (converted as C assignment
converts, so ``fd: s32`` reads a syscall's 8-byte descriptor argument). A
pointer field of a tracepoint declared ``Char(N)`` reads the string it
points to (user memory for ``syscalls:*``, kernel memory otherwise). A field
that does not fit raises :class:`~flowtrace.errors.EventDefinitionError`
naming it and listing the fields there are.

**Laziness.** Building ``tracepoint(...)`` reads nothing: the format file
(readable by root only) is read when the source is first planned, explained
or run, or its ``event`` is asked for. A replay rebuilds the generated event
type from the recording instead (see :func:`flowtrace.recording.replay_event`),
so replaying needs no root. Failing to read tracefs raises
:class:`~flowtrace.errors.AttachError`, one line naming the tracepoint and
the fix.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import ktypes
from .errors import EventDefinitionError, PipelineDefinitionError, one_line
from .events import Event, event_type, layout_of
from .kernel_source import KernelSource
from .ktypes import KernelType, kernel_type
from .probes import Param, Probe, RawTracepoint, Tracepoint, Uprobe, Usdt
from .tracefs_format import FieldKind, FormatField, TracepointFormat, read_format

__all__ = [
    "DEFAULT_STRING_SIZE",
    "Arg",
    "TracepointDefinition",
    "TracepointSource",
    "TypedUsdt",
    "define_tracepoint",
    "raw_tracepoint",
    "syscall_entry",
    "syscall_exit",
    "task_field_names",
    "tracepoint",
    "uprobe",
    "usdt",
]

E = TypeVar("E", bound=Event)

DEFAULT_STRING_SIZE = 256
"""Bytes kept of each ``__data_loc`` string of a generated event (NUL included)."""

_TASK_FIELDS = {
    "ts": ktypes.ktime_ns,
    "pid": ktypes.task_pid,
    "tid": ktypes.task_tid,
    "comm": ktypes.task_comm,
}


@dataclass(frozen=True)
class Arg:
    """Argument ``position`` (1-based: ``Arg(6, ...)`` is the sixth) read as ``type``."""

    position: int
    type: object

    def __post_init__(self) -> None:
        if not isinstance(self.position, int) or not 1 <= self.position <= 12:
            raise PipelineDefinitionError(
                f"Arg({self.position!r}, ...): the position is 1-based, 1 to 12"
            )


def task_field_names(own: Sequence[str]) -> dict[str, str]:
    """Task field -> its name in an event whose own fields are ``own``: the
    task field's name, or ``task_<name>`` when ``own`` has that name."""
    names = {}
    for task in _TASK_FIELDS:
        name = task
        while name in own:
            name = f"task_{name}"
        names[task] = name
    return names


def _with_task_fields(own: Sequence[tuple[str, KernelType]]) -> list[tuple[str, KernelType]]:
    renamed = task_field_names([name for name, _ in own])
    task = [(renamed[t], _kt(annotated)) for t, annotated in _TASK_FIELDS.items()]
    return task + list(own)


def _kt(declared: object) -> KernelType:
    found = kernel_type(declared)
    assert found is not None
    return found


def _class_name(text: str) -> str:
    """``sys_enter_write`` -> ``SysEnterWrite``; ``http__server__request`` ->
    ``HttpServerRequest``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    name = "".join(w[0].upper() + w[1:] for w in words) or "Event"
    return name if name[0].isalpha() else f"Event{name}"


_TYPE_NAMES = {
    _kt(getattr(ktypes, n)): n
    for n in [
        *("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64"),
        *("ktime_ns", "task_pid", "task_tid", "task_uid", "task_comm", "cpu_id"),
    ]
}


def spell(ktype: KernelType) -> str:
    """How a user declares ``ktype``: ``u32``, ``task_pid``, ``Char(64)``."""
    named = _TYPE_NAMES.get(ktype)
    if named is not None:
        return named
    return f"Char({ktype.array_len})" if ktype.is_string else ktype.c_type


def _listing(available: Mapping[str, KernelType]) -> str:
    return ", ".join(f"{name}: {spell(t)}" for name, t in available.items())


def _check_declared(
    event: type[Any],
    available: Mapping[str, KernelType],
    what: str,
    pointers: frozenset[str] | set[str] = frozenset(),
) -> list[tuple[str, KernelType]]:
    """The (field, declared type) pairs of ``event`` to read from ``what``;
    raises EventDefinitionError at the first field that does not fit. A
    field in ``pointers`` may be declared a string (the string it points to)."""
    read = []
    for f in layout_of(event).fields:
        if f.ktype.fill is not None:
            continue  # filled automatically, whatever its name
        have = available.get(f.name)
        where = f"{event.__name__}.{f.name}"
        if have is None:
            raise EventDefinitionError(
                f"{where}: {what} has no field {f.name!r} (fields: {_listing(available)})"
            )
        if have.fill is not None:
            raise EventDefinitionError(
                f"{where}: declare it {spell(have)} (filled automatically); fields of"
                f" {what}: {_listing(available)}"
            )
        if have.is_string != f.ktype.is_string and not (f.name in pointers and f.ktype.is_string):
            kind = "a string" if have.is_string else "an integer"
            raise EventDefinitionError(
                f"{where}: declared {spell(f.ktype)}, but {f.name} of {what} is {kind}"
                f" ({spell(have)}); fields: {_listing(available)}"
            )
        read.append((f.name, f.ktype))
    return read


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
) -> TracepointDefinition:
    """The event type (generated, or ``event`` checked against ``fmt``) and
    probe of a source over the tracepoint ``fmt`` describes."""
    readable, unread = _readable(fmt, string_size)
    by_name = {r.name: r for r in readable}
    what = f"{fmt.category}:{fmt.name}"
    own = [(r.name, r.ktype) for r in readable]
    if event is None:
        event = event_type(_class_name(fmt.name), _with_task_fields(own))
        read = own
    else:
        pointers = {r.name for r in readable if r.field.kind is FieldKind.POINTER}
        read = _check_declared(event, dict(_with_task_fields(own)), f"tracepoint {what}", pointers)
    user_memory = fmt.category == "syscalls"
    body = "\n".join(
        _read_field(by_name[field], field, declared, user_memory) for field, declared in read
    )
    probe = Probe(what, Tracepoint(fmt.category, fmt.name), body=body)
    return TracepointDefinition(event, probe, tuple(unread))


class TracepointSource(KernelSource[E], Generic[E]):
    """A kernel source over a tracepoint, its event type generated from the
    tracepoint's format file (or declared, and checked against it).

    Building one reads nothing. The first use of anything derived from the
    format (``event``, ``probes``, ``layout``, planning, ``describe``,
    running) reads the format file and completes the
    :class:`~flowtrace.kernel_source.KernelSource` construction; a source
    with a declared event answers ``event`` without reading it.
    """

    def __init__(
        self,
        category: str,
        name: str,
        *,
        event: type[E] | None = None,
        string_size: int = DEFAULT_STRING_SIZE,
        source_name: str = "",
        transport: str = "auto",
        buffer_pages: int = 1024,
        cflags: Sequence[str] = (),
    ) -> None:
        if not 0 < string_size <= 4096:
            raise PipelineDefinitionError(f"string_size must be 1 to 4096 bytes, not {string_size}")
        self.tracepoint = f"{category}:{name}"
        self.name = source_name or self.tracepoint
        self.unread: tuple[FormatField, ...] = ()
        self._where = (category, name)
        self._string_size = string_size
        self._declared = event
        self._options: dict[str, Any] = {
            "transport": transport,
            "buffer_pages": buffer_pages,
            "cflags": cflags,
        }
        self._defined = False
        if event is not None:
            self.event = event  # known without the format

    @property
    def generated_event_name(self) -> str | None:
        """The name of the generated event type (None with a declared event): a
        replay rebuilds that type from the recording's header instead of
        reading the format (see :func:`flowtrace.recording.replay_event`)."""
        return None if self._declared is not None else _class_name(self._where[1])

    def _define(self) -> None:
        category, name = self._where
        definition = define_tracepoint(
            read_format(category, name), event=self._declared, string_size=self._string_size
        )
        KernelSource.__init__(
            self, definition.event, definition.probe, name=self.name, **self._options
        )
        self.unread = definition.unread
        self._defined = True

    if not TYPE_CHECKING:

        def __getattr__(self, attr: str) -> Any:
            # Reached only for attributes not set yet: those KernelSource's
            # construction sets are completed from the format on first use.
            if attr.startswith("__") or self.__dict__.get("_defined", True):
                raise AttributeError(attr)
            if attr not in _kernel_source_attributes():
                raise AttributeError(attr)
            self._define()
            return getattr(self, attr)

    def describe(self) -> list[str]:
        lines = super().describe()
        if self.unread:
            text = ", ".join(f.describe() for f in self.unread)
            lines.append(f"  fields not read (no kernel type for them): {text}")
        return lines


@functools.cache
def _kernel_source_attributes() -> frozenset[str]:
    """The attributes a constructed KernelSource has (found by constructing one)."""
    sample = event_type("Sample", [("x", ktypes.integer(4, False))])
    return frozenset(vars(KernelSource(sample, name="sample")))


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
    category, event_name = _split(name)
    return TracepointSource(
        category,
        event_name,
        event=event,
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


# -- arguments: raw tracepoints, uprobes, USDT -------------------------------------


@dataclass(frozen=True)
class _Argument:
    name: str
    position: int
    ktype: KernelType

    @property
    def c_type(self) -> str:
        """The C variable the argument is read into (a string's pointer: u64)."""
        return "u64" if self.ktype.is_string else self.ktype.c_type


def _arguments(args: Mapping[str, object], what: str) -> list[_Argument]:
    found: list[_Argument] = []
    for position, (name, declared) in enumerate(args.items(), start=1):
        if isinstance(declared, Arg):
            position, declared = declared.position, declared.type
        ktype = kernel_type(declared)
        if ktype is None or ktype.fill is not None:
            given = repr(declared) if ktype is None else spell(ktype)
            raise PipelineDefinitionError(
                f"{what}: argument {name!r}: declare it with a kernel type (u64, s32, Char(64),"
                f" or Arg(position, type)), not {given}"
            )
        found.append(_Argument(name, position, ktype))
    positions = [a.position for a in found]
    if len(set(positions)) != len(positions):
        raise PipelineDefinitionError(f"{what}: two arguments read the same position")
    return found


def _argument_source(
    what: str,
    class_name: str,
    point: Any,
    arguments: list[_Argument],
    *,
    kernel_strings: bool,
    declared: type[E] | None,
    name: str,
    transport: str,
    buffer_pages: int,
) -> KernelSource[Any]:
    """A KernelSource over ``point`` emitting ``arguments`` (or ``declared``'s
    fields among them) with the task fields."""
    own = [(a.name, a.ktype) for a in arguments]
    if declared is None:
        event: type[Any] = event_type(class_name, _with_task_fields(own))
        read = own
    else:
        event = declared
        read = _check_declared(declared, dict(_with_task_fields(own)), what)
    by_name = {a.name: a for a in arguments}
    used = [by_name[field] for field, _ in read]
    copy_string = "bpf_probe_read_kernel_str" if kernel_strings else "bpf_probe_read_user_str"
    body = "\n".join(
        f"{copy_string}(&e.{field}, sizeof(e.{field}), (void *){field});"
        if ktype.is_string
        else f"e.{field} = {field};"
        for field, ktype in read
    )
    probe = Probe(what, point, body=body, params=[Param(a.name, a.c_type) for a in used])
    return KernelSource(event, probe, name=name, transport=transport, buffer_pages=buffer_pages)


def raw_tracepoint(
    name: str,
    *,
    args: Mapping[str, object],
    event: type[E] | None = None,
    source_name: str = "",
    transport: str = "auto",
    buffer_pages: int = 1024,
) -> KernelSource[Any]:
    """Every hit of the raw tracepoint ``name`` (``"sched_switch"``), with
    ``args`` read from its arguments (the tracepoint function's parameters,
    in order). A ``Char(N)`` argument reads the kernel string it points to;
    kernel structs are not dereferenced."""
    what = f"raw tracepoint {name}"
    arguments = _arguments(args, what)
    fields = {a.name: f"({a.c_type})ctx->args[{a.position - 1}]" for a in arguments}
    return _argument_source(
        what,
        _class_name(name) + "Raw",
        RawTracepoint(name, fields=fields),
        arguments,
        kernel_strings=True,
        declared=event,
        name=source_name or name,
        transport=transport,
        buffer_pages=buffer_pages,
    )


def uprobe(
    binary: str,
    symbol: str,
    *,
    args: Mapping[str, object],
    event: type[E] | None = None,
    pid: int = -1,
    source_name: str = "",
    transport: str = "auto",
    buffer_pages: int = 1024,
) -> KernelSource[Any]:
    """Every call of ``symbol`` in ``binary`` (a path, or a library name like
    ``"c"``), with ``args`` read from the function's arguments (at most six:
    those passed in registers). A ``Char(N)`` argument reads the user string
    it points to. ``pid`` limits it to one process. IFUNC symbols are followed
    (see :class:`~flowtrace.probes.Uprobe`)."""
    what = f"calls of {symbol} in {binary}"
    arguments = _arguments(args, what)
    if any(a.position > 6 for a in arguments):
        raise PipelineDefinitionError(f"{what}: uprobes read arguments 1 to 6 (registers)")
    fields = {a.name: f"({a.c_type})PT_REGS_PARM{a.position}(ctx)" for a in arguments}
    return _argument_source(
        what,
        _class_name(symbol) + "Call",
        Uprobe(binary, symbol, pid=pid, fields=fields),
        arguments,
        kernel_strings=False,
        declared=event,
        name=source_name or symbol,
        transport=transport,
        buffer_pages=buffer_pages,
    )


def usdt(
    target: int | str,
    probe: str,
    *,
    args: Mapping[str, object],
    event: type[E] | None = None,
    source_name: str = "",
    transport: str = "auto",
    buffer_pages: int = 1024,
) -> KernelSource[Any]:
    """Every firing of the USDT probe ``probe`` (``"provider:name"``) of the
    process ``target`` (a pid) or the binary ``target`` (a path), with
    ``args`` read from the probe's arguments. Declare each argument with its
    size (``s32`` for a C ``int``, ``u64`` for a ``long``); the sizes are
    checked against the probe's note when the source is planned. A
    ``Char(N)`` argument reads the user string it points to. A probe behind
    a semaphore (most runtimes') needs a pid."""
    provider, sep, name = probe.rpartition(":")
    where = f"process {target}" if isinstance(target, int) else target
    what = f"USDT {probe} in {where}"
    if not sep or not provider or not name:
        raise PipelineDefinitionError(f"{what}: give the probe as provider:name")
    arguments = _arguments(args, what)
    point = TypedUsdt(
        name,
        binary="" if isinstance(target, int) else target,
        pid=target if isinstance(target, int) else None,
        provider=provider,
        arguments=tuple(a.position for a in arguments),
        sizes=tuple((a.position, a.c_type) for a in arguments),
    )
    return _argument_source(
        what,
        _class_name(name),
        point,
        arguments,
        kernel_strings=False,
        declared=event,
        name=source_name or name,
        transport=transport,
        buffer_pages=buffer_pages,
    )


@dataclass(frozen=True)
class TypedUsdt(Usdt):
    """A USDT probe whose arguments are read into variables of declared C
    types: ``sizes`` holds (position, C type) pairs, checked against the
    argument sizes in the probe's note (bcc reads nothing into a variable of
    another size)."""

    sizes: tuple[tuple[int, str], ...] = ()

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is not None or not self.sizes:
            return reason
        try:
            return self._wrong_size()
        except Exception as exc:
            return f"cannot read the arguments of USDT {self.probe_name()}: {one_line(exc)}"

    def _wrong_size(self) -> str | None:
        context = self._context()  # kept alive while its probes are read: they point into it
        probes = [
            p
            for p in context.enumerate_probes()
            if p.name.decode() == self.name and self.provider in ("", p.provider.decode())
        ]
        location = probes[0].get_location(0)
        for position, c_type in self.sizes:
            if position > location.num_arguments:
                return (
                    f"USDT {self.probe_name()} has {location.num_arguments} arguments,"
                    f" not {position}"
                )
            argument = location.get_argument(position - 1)
            declared = ktypes.parse_c_type(c_type)
            if argument.size != declared.size:
                fits = ktypes.integer(argument.size, argument.signed).c_type
                return (
                    f"argument {position} of USDT {self.probe_name()} is {argument.size} bytes"
                    f" ({fits}), declared {c_type}: declare it {fits}"
                )
        return None
