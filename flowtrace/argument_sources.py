"""Typed sources over function arguments: raw tracepoints, uprobes, USDT.

::

    raw_tracepoint("sys_enter", args={"id": Arg(2, s64)})
    uprobe("/usr/bin/prog", "visit", args={"path": Char(64), "n": u64})
    usdt(pid, "node:http__server__request", args={"path": Arg(6, Char(128))})

Arguments are declared as kernel types, in order (``u64``, ``s32``,
``Char(64)``...), or as ``Arg(position, type)`` to take argument
``position`` (1-based). A ``Char(N)`` argument is a pointer to a string,
read from user memory for uprobes and USDT, from kernel memory for raw
tracepoints; kernel structs are not dereferenced. Each argument is read
into a variable of its declared type: USDT arguments must be declared with
their size (``s32`` for a C ``int``), which is checked against the probe's
note when the source is planned. The event type is generated (task fields
first, see :mod:`flowtrace.typed_events`) or declared with ``event=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import ktypes
from .errors import PipelineDefinitionError, one_line
from .events import Event, event_type
from .kernel_source import KernelSource
from .ktypes import KernelType, kernel_type
from .probes import Param, Probe, RawTracepoint, Uprobe, Usdt
from .typed_events import check_declared, class_name, spell, with_task_fields

__all__ = ["Arg", "TypedUsdt", "raw_tracepoint", "uprobe", "usdt"]

E = TypeVar("E", bound=Event)


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


@dataclass(frozen=True)
class _Argument:
    name: str
    position: int
    ktype: KernelType

    @property
    def c_type(self) -> str:
        """The C variable the argument is read into (a string's pointer: u64)."""
        return "u64" if self.ktype.is_string else self.ktype.c_type

    @property
    def param(self) -> str:
        """Its C parameter's name: ``ft_arg_<name>``, so an argument named
        ``ctx``, ``e`` or ``int`` collides with nothing in the program."""
        return f"ft_arg_{self.name}"


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
        event: type[Any] = event_type(class_name, with_task_fields(own))
        read = own
    else:
        event = declared
        read = check_declared(declared, dict(with_task_fields(own)), what)
    by_name = {a.name: a for a in arguments}
    used = [by_name[field] for field, _ in read]
    copy_string = "bpf_probe_read_kernel_str" if kernel_strings else "bpf_probe_read_user_str"
    body = "\n".join(
        f"{copy_string}(&e.{field}, sizeof(e.{field}), (void *){by_name[field].param});"
        if ktype.is_string
        else f"e.{field} = {by_name[field].param};"
        for field, ktype in read
    )
    params = [Param(a.param, a.c_type) for a in used]
    probe = Probe(what, point, body=body, params=params)
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
    fields = {a.param: f"({a.c_type})ctx->args[{a.position - 1}]" for a in arguments}
    return _argument_source(
        what,
        class_name(name) + "Raw",
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
    fields = {a.param: f"({a.c_type})PT_REGS_PARM{a.position}(ctx)" for a in arguments}
    return _argument_source(
        what,
        class_name(symbol) + "Call",
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
        class_name(name),
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
