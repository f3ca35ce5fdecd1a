"""Typed events and the record layout derived from them.

An :class:`Event` subclass is the single definition of a record: the C struct
the BPF program fills and the decoder for the bytes it emits are both derived
from its annotated fields (see :mod:`flowtrace.ktypes`). Fields are laid out
in declaration order with C's natural alignment, so the derived struct and the
decoder agree by construction.
"""

from __future__ import annotations

import functools
import keyword
import struct
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import numpy as np

from .errors import EventDefinitionError
from .ktypes import KernelType, annotation

__all__ = ["Event", "FieldLayout", "Layout", "event_type", "layout_of"]


class Event(msgspec.Struct, frozen=True, gc=False):
    """Base class of every event.

    Subclasses declare fields annotated with kernel types. Instances are
    immutable; they hold only ints and strs, so they can never be part of a
    reference cycle (hence ``gc=False``).
    """

    kind: ClassVar[str] = "event"


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class FieldLayout:
    """One field of a record: its name, kernel type and byte offset."""

    name: str
    ktype: KernelType
    offset: int


@dataclass(frozen=True)
class Layout(Generic[E]):
    """The byte layout of one event type, as the BPF program writes it."""

    event: type[E]
    fields: tuple[FieldLayout, ...]
    size: int
    align: int

    @property
    def c_name(self) -> str:
        return f"ft_{self.event.__name__.lower()}"

    def c_struct(self) -> str:
        """The C definition of the record struct."""
        lines = [f"struct {self.c_name} {{"]
        lines += [f"    {f.ktype.c_declaration(f.name)}" for f in self.fields]
        lines.append("};")
        return "\n".join(lines)

    def c_fill(self, var: str) -> str:
        """C statements filling the automatically filled fields of ``var``."""
        return "\n".join(
            f.ktype.fill.format(field=f"{var}.{f.name}") for f in self.fields if f.ktype.fill
        )

    def dtype(self, header: int = 0, stride: int | None = None) -> np.dtype[Any]:
        """A numpy dtype for records at ``stride`` bytes, payload after ``header`` bytes."""
        return np.dtype(
            {
                "names": [f.name for f in self.fields],
                "formats": [f.ktype.numpy_code for f in self.fields],
                "offsets": [header + f.offset for f in self.fields],
                "itemsize": stride if stride is not None else header + self.size,
            }
        )

    def decode(
        self, records: np.ndarray[Any, Any], strings: dict[bytes, str] | None = None
    ) -> list[E]:
        """Decode an array of records (of :meth:`dtype`) into events, in order.

        ``strings`` memoises decoded strings across calls (a reader keeps one:
        command names and paths repeat); it is cleared when it passes 65536
        entries, so it holds at most that many plus one batch's worth.
        """
        cache = {} if strings is None else strings
        columns: list[list[Any]] = []
        for f in self.fields:
            column = records[f.name].tolist()
            if f.ktype.is_string:
                column = _decode_strings(column, cache)
            columns.append(column)
        return list(map(self.event, *columns))

    def decode_at(
        self, data: Any, offsets: Sequence[int], strings: dict[bytes, str] | None = None
    ) -> list[E]:
        """Decode the records at ``offsets`` in ``data`` (any buffer), one by
        one: the same events as :meth:`decode`, cheaper for a handful (no
        array to build), dearer for many. A layout that decodes its own way
        (a subclass's :meth:`decode`) gets its records as an array."""
        if type(self).decode is not Layout.decode:
            dtype = self.dtype()
            pieces = [np.frombuffer(data, dtype, 1, offset) for offset in offsets]
            return self.decode(np.concatenate(pieces) if pieces else np.empty(0, dtype), strings)
        unpack = self._unpacker.unpack_from
        strings_at = self._string_positions
        cache = {} if strings is None else strings
        events = []
        for offset in offsets:
            values = list(unpack(data, offset))
            for i in strings_at:
                values[i] = _decode_strings([values[i]], cache)[0]
            events.append(self.event(*values))
        return events

    @functools.cached_property
    def _unpacker(self) -> struct.Struct:
        """A record as :mod:`struct` reads it (padding skipped)."""
        codes, at = ["<"], 0
        for f in self.fields:
            codes.append(f"{f.offset - at}x" if f.offset > at else "")
            code = f.ktype.numpy_code
            codes.append(f"{code[1:]}s" if code[0] == "S" else _STRUCT_CODES[code])
            at = f.offset + f.ktype.size
        return struct.Struct("".join(codes))

    @functools.cached_property
    def _string_positions(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.fields) if f.ktype.is_string)

    def decode_bytes(
        self, data: bytes | bytearray | memoryview, count: int = -1, offset: int = 0
    ) -> list[E]:
        """Decode ``count`` records packed back to back in ``data``."""
        return self.decode(np.frombuffer(data, dtype=self.dtype(), count=count, offset=offset))

    def encode(self, event: E) -> bytes:
        """The bytes the BPF program would emit for ``event`` (for tests and replay)."""
        record = np.zeros(1, dtype=self.dtype())
        for f in self.fields:
            value = getattr(event, f.name)
            record[f.name] = value.encode() if f.ktype.is_string else value
        return record.tobytes()


_STRING_CACHE_LIMIT = 65536
_STRUCT_CODES = {
    f"<{kind}{size}": code
    for kind, codes in (("u", "BHIQ"), ("i", "bhiq"))
    for size, code in zip((1, 2, 4, 8), codes, strict=True)
}


def _decode_strings(raw: list[bytes], cache: dict[bytes, str]) -> list[str]:
    """NUL-terminated, UTF-8 (invalid bytes replaced), memoised in ``cache``."""
    try:
        return list(map(cache.__getitem__, raw))
    except KeyError:
        pass
    if len(cache) > _STRING_CACHE_LIMIT:
        cache.clear()
    for value in set(raw).difference(cache):
        cache[value] = value.partition(b"\0")[0].decode("utf-8", "replace")
    return list(map(cache.__getitem__, raw))


C_RESERVED = frozenset(
    {
        "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
        "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
        "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
        "union", "unsigned", "void", "volatile", "while", "current",
    }
)
"""Names a record field cannot have: C keywords, and ``current`` (a macro
of the kernel headers the program is compiled with)."""

MAX_RECORD = 480
"""The largest record a probe fills, in bytes: it lives on the BPF program's
512-byte stack beside the probe's own variables."""


def _align(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) // alignment * alignment


def layout_of(event: type[E]) -> Layout[E]:
    """The record layout of ``event``, derived once from its annotations."""
    layout: Layout[E] = _derive_layout(event)
    return layout


@functools.cache
def _derive_layout(event: type[Event]) -> Layout[Any]:
    try:
        hints = typing.get_type_hints(event, include_extras=True)
    except NameError as exc:
        raise EventDefinitionError(f"{event.__name__}: cannot resolve annotation ({exc})") from exc
    fields: list[FieldLayout] = []
    offset = 0
    max_align = 1
    for name in event.__struct_fields__:
        if name in C_RESERVED:
            raise EventDefinitionError(
                f"{event.__name__}.{name}: {name!r} cannot name a field of a kernel record"
                " (a C keyword or kernel macro); rename it"
            )
        ktype = next(
            (m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, KernelType)),
            None,
        )
        if ktype is None:
            raise EventDefinitionError(
                f"{event.__name__}.{name}: annotate it with a kernel type "
                "(u32, s64, comm, Char(N), ... from flowtrace.ktypes)"
            )
        offset = _align(offset, ktype.align)
        fields.append(FieldLayout(name, ktype, offset))
        offset += ktype.size
        max_align = max(max_align, ktype.align)
    if not fields:
        raise EventDefinitionError(f"{event.__name__} declares no fields")
    size = _align(offset, max_align)
    if size > MAX_RECORD:
        raise EventDefinitionError(
            f"{event.__name__}: its record is {size} bytes, and a BPF program builds records"
            f" on a 512-byte stack (at most {MAX_RECORD}): use shorter strings (Char(N),"
            " string_size=) or fewer fields"
        )
    return Layout(event, tuple(fields), size, max_align)


def event_type(name: str, fields: Sequence[tuple[str, KernelType]]) -> type[Event]:
    """A new :class:`Event` subclass ``name`` with ``fields`` in order, as if
    declared with a class statement (its layout is derived the same way).

    Field names must be Python identifiers that do not start with ``_``
    (msgspec cannot hold those), and distinct; else ``EventDefinitionError``.
    """
    if not name.isidentifier() or keyword.iskeyword(name):
        raise EventDefinitionError(f"{name!r} is not a usable event class name")
    seen: set[str] = set()
    for field, _ in fields:
        if not field.isidentifier() or keyword.iskeyword(field) or field.startswith("_"):
            raise EventDefinitionError(
                f"{name}: {field!r} is not a usable field name (an identifier, not starting with _)"
            )
        if field in seen:
            raise EventDefinitionError(f"{name}: field {field!r} appears twice")
        seen.add(field)
    made = msgspec.defstruct(
        name,
        [(field, annotation(ktype)) for field, ktype in fields],
        bases=(Event,),
        frozen=True,
        gc=False,
        module=__name__,
    )
    assert issubclass(made, Event)
    return made
