"""Event types of typed sources: the task fields they start with, the
naming rule, generated class names, and checking a declared event.

Fields of a generated event, in order: the task fields ``ts``
(``ktime_ns``), ``pid`` (``task_pid``, the process id), ``tid``
(``task_tid``) and ``comm`` (``task_comm``); then the source's own fields
(a tracepoint's, or declared arguments). **Naming rule**: a source's own
field keeps its name; a task field with the same name becomes
``task_<name>`` (``block:block_rq_issue`` has its own ``comm``, so the
current task's is ``task_comm``).

A declared event (``event=MyEvent``) may have fields of automatically
filled types (``ktime_ns``, ``task_pid``, ``cpu_id``...) under any name;
every other field must name one of the source's own fields: strings for
strings, integers for integers (converted as C assignment converts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import ktypes
from .errors import EventDefinitionError
from .events import layout_of
from .ktypes import KernelType, kernel_type

__all__ = [
    "TASK_FIELDS",
    "check_declared",
    "class_name",
    "kernel_type_of",
    "spell",
    "task_field_names",
    "with_task_fields",
]

TASK_FIELDS = {
    "ts": ktypes.ktime_ns,
    "pid": ktypes.task_pid,
    "tid": ktypes.task_tid,
    "comm": ktypes.task_comm,
}


def task_field_names(own: Sequence[str]) -> dict[str, str]:
    """Task field -> its name in an event whose own fields are ``own``: the
    task field's name, or ``task_<name>`` when ``own`` has that name."""
    names = {}
    for task in TASK_FIELDS:
        name = task
        while name in own:
            name = f"task_{name}"
        names[task] = name
    return names


def with_task_fields(own: Sequence[tuple[str, KernelType]]) -> list[tuple[str, KernelType]]:
    """The fields of a generated event: the task fields, named by the rule, then ``own``."""
    renamed = task_field_names([name for name, _ in own])
    task = [(renamed[t], kernel_type_of(annotated)) for t, annotated in TASK_FIELDS.items()]
    return task + list(own)


def kernel_type_of(declared: object) -> KernelType:
    """The kernel type of an annotation known to have one (``task_pid``...)."""
    found = kernel_type(declared)
    assert found is not None
    return found


def class_name(text: str) -> str:
    """``sys_enter_write`` -> ``SysEnterWrite``; ``http__server__request`` ->
    ``HttpServerRequest``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    name = "".join(w[0].upper() + w[1:] for w in words) or "Event"
    return name if name[0].isalpha() else f"Event{name}"


_TYPE_NAMES = {
    kernel_type_of(getattr(ktypes, n)): n
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


def check_declared(
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
