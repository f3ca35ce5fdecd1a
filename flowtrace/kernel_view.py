"""The fields a stage inside the BPF program can read, as C expressions.

A kernel source's probes fill one record ``e`` (a pointer in ``ft_submit``).
For a source of one event type its fields are ``e->name``; a source of
several types fills a tagged record, where member ``k``'s fields are
``e->m<k>_<name>`` and ``e->ft_member == k`` says which member it holds
(:mod:`flowtrace.tagged`). A :class:`View` lists, for each event type that
reaches a stage, which fields it has and how C reads them; after a join it
is the pair's (``latency_ns``), after a running count a copy of the record
with its fields added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import Layout, layout_of
from .ktypes import KernelType
from .tagged import TAG, TaggedLayout, member_field

__all__ = ["Field", "Member", "View", "record_view"]

RECORD = "e"
"""The name of the record pointer in ``ft_submit``."""


@dataclass(frozen=True)
class Field:
    """A field a stage can read: its kernel type and the C expression
    reading it (for a char array, the array)."""

    name: str
    ktype: KernelType
    c: str

    def copy_into(self, target: str, member: str) -> str:
        """C copying this field into ``target.member`` (an array by memcpy)."""
        if self.ktype.is_string:
            return f"__builtin_memcpy({target}.{member}, {self.c}, sizeof({target}.{member}));"
        return f"{target}.{member} = {self.c};"


@dataclass(frozen=True)
class Member:
    """One event type reaching a stage: C true for records of this type
    (``"1"`` when it is the only one), and its fields."""

    event: type[Any]
    tag: int | None
    fields: tuple[Field, ...]

    @property
    def condition(self) -> str:
        return "1" if self.tag is None else f"{RECORD}->{TAG} == {self.tag}"

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class View:
    """The event types reaching a stage, in the record the program fills;
    ``record`` is C for a pointer to the record a stage writes out from
    here (the source's own ``e``, or a copy with fields added)."""

    members: tuple[Member, ...]
    record: str = RECORD

    def names(self) -> str:
        return " and ".join(m.event.__name__ for m in self.members)

    def shared(self, name: str) -> Field | str:
        """Field ``name`` as every member has it (one C expression choosing
        by the tag), or why there is no such field in the kernel: a field a
        member lacks (a property computed in Python, or no field at all), or
        of different types in different members."""
        found = [m.field(name) for m in self.members]
        if any(f is None for f in found):
            missing = next(m for m, f in zip(self.members, found, strict=True) if f is None)
            computed = isinstance(getattr(missing.event, name, None), property)
            what = "computes in Python" if computed else "does not have"
            return f"reads {name!r}, which the kernel record of {missing.event.__name__} {what}"
        fields = [f for f in found if f is not None]
        kinds = {f.ktype.unfilled() for f in fields}
        if len(kinds) > 1:
            return f"reads {name!r}, whose type differs between {self.names()}"
        if len(fields) == 1:
            return fields[0]
        expression = fields[-1].c
        for member, f in zip(self.members[-2::-1], fields[-2::-1], strict=True):
            expression = f"({member.condition} ? {f.c} : {expression})"
        return Field(name, fields[0].ktype, expression)

    def member_of(self, event: type[Any]) -> list[Member]:
        """The members whose events are ``event`` instances."""
        return [m for m in self.members if issubclass(m.event, event)]


def record_view(layout: Layout[Any], events: tuple[type[Any], ...]) -> View:
    """The view of a source's record: ``layout`` is what its probes fill,
    ``events`` the types that come out (several for a tagged record)."""
    if isinstance(layout, TaggedLayout):
        members = []
        for tag, member in enumerate(layout.members):
            fields = tuple(
                Field(f.name, f.ktype, f"{RECORD}->{member_field(tag, f.name)}")
                for f in layout_of(member).fields
            )
            members.append(Member(member, tag, fields))
        return View(tuple(members))
    fields = tuple(Field(f.name, f.ktype, f"{RECORD}->{f.name}") for f in layout.fields)
    return View((Member(events[0] if events else layout.event, None, fields),))
