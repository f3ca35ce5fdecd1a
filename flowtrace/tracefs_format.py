"""A tracepoint's record layout, as its tracefs ``format`` file describes it.

Each line of a format file names one field of the record the kernel writes
when the tracepoint fires::

    field:unsigned int bytes;	offset:28;	size:4;	signed:0;
    field:char rwbs[10];	offset:34;	size:10;	signed:0;
    field:__data_loc char[] cmd;	offset:60;	size:4;	signed:0;

:func:`parse_format` turns the text into :class:`FormatField` values, each
classified by how a BPF program reads it (:class:`FieldKind`); the offsets
are relative to the start of the record, which is the context pointer a
tracepoint program receives. :func:`read_format` reads the file of a
tracepoint of the running kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from . import kernel
from .errors import AttachError, KernelUnreadable

__all__ = ["FieldKind", "FormatField", "TracepointFormat", "parse_format", "read_format"]

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*(?:signed:(?P<signed>\d+);)?"
)
_DECLARATION = re.compile(r"^(?P<type>.*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*(?P<array>\[[^\]]*\])?$")
_CHAR_TYPES = {"char", "const char", "signed char", "unsigned char"}
_MOUNT_FIX = "mount tracefs (mount -t debugfs debugfs /sys/kernel/debug) and run as root"


class FieldKind(Enum):
    """How a BPF program reads a field of the record."""

    INTEGER = "integer"
    """An integer of ``size`` bytes (1, 2, 4 or 8), signed per ``signed``."""
    POINTER = "pointer"
    """An address (read as an unsigned integer of ``size`` bytes)."""
    CHARS = "chars"
    """A fixed ``char[size]`` array, a string unless it fills the array."""
    STRING = "string"
    """``__data_loc char[]``: a u32 in the record whose low 16 bits are the
    string's offset from the record's start and high 16 bits its length."""
    UNSUPPORTED = "unsupported"
    """Anything else (byte and integer arrays, ``__rel_loc``, odd sizes)."""


@dataclass(frozen=True)
class FormatField:
    """One field of a tracepoint's record: its C declaration, place and kind."""

    name: str
    c_type: str
    offset: int
    size: int
    signed: bool
    kind: FieldKind

    @property
    def is_common(self) -> bool:
        """A field every tracepoint has (``common_pid``...): not part of its own data."""
        return self.name.startswith("common_")

    def describe(self) -> str:
        """``char rwbs[10]`` style, for messages."""
        return f"{self.c_type} {self.name}"


@dataclass(frozen=True)
class TracepointFormat:
    """The fields of ``category:name``'s record, in record order."""

    category: str
    name: str
    fields: tuple[FormatField, ...]

    @property
    def own_fields(self) -> tuple[FormatField, ...]:
        """The fields that are this tracepoint's own data (no ``common_*``)."""
        return tuple(f for f in self.fields if not f.is_common)


def _kind(c_type: str, array: str | None, size: int) -> FieldKind:
    if c_type.startswith(("__data_loc", "__rel_loc")):
        return FieldKind.STRING if c_type == "__data_loc char[]" else FieldKind.UNSUPPORTED
    if array is not None:
        return FieldKind.CHARS if c_type in _CHAR_TYPES and size > 0 else FieldKind.UNSUPPORTED
    if size not in (1, 2, 4, 8):
        return FieldKind.UNSUPPORTED
    return FieldKind.POINTER if c_type.endswith("*") else FieldKind.INTEGER


def parse_format(text: str, category: str = "", name: str = "") -> TracepointFormat:
    """The fields a format file's ``text`` declares, in order.

    Lines other than ``field:`` lines (name, ID, print fmt) are ignored. A
    ``field:`` line that cannot be read raises ``ValueError`` naming it.
    """
    fields: list[FormatField] = []
    for line in text.splitlines():
        if not line.strip().startswith("field:"):
            continue
        found = _FIELD.match(line)
        declared = found and _DECLARATION.match(" ".join(found["decl"].split()))
        if found is None or not declared:
            raise ValueError(f"unreadable format line {line.strip()!r}")
        c_type = declared["type"].strip()
        array = declared["array"]
        size = int(found["size"])
        fields.append(
            FormatField(
                name=declared["name"],
                c_type=f"{c_type}{array}" if array else c_type,
                offset=int(found["offset"]),
                size=size,
                signed=found["signed"] == "1",
                kind=_kind(c_type, array, size),
            )
        )
    return TracepointFormat(category, name, tuple(fields))


def format_path(category: str, name: str) -> Path | None:
    """Where the format file of ``category:name`` is, or None without tracefs."""
    root = kernel.tracefs()
    return None if root is None else root / "events" / category / name / "format"


def read_format(category: str, name: str) -> TracepointFormat:
    """The format of the running kernel's tracepoint ``category:name``.

    Raises :class:`~flowtrace.errors.AttachError`, one line naming the
    tracepoint and the fix, when tracefs is not there or not readable (it is
    readable by root only), or when the kernel has no such tracepoint.
    """
    what = f"tracepoint {category}:{name}"
    if not _NAME.fullmatch(category) or not _NAME.fullmatch(name):
        raise AttachError(f"{what}: not a tracepoint name; give it as category:name")
    path = format_path(category, name)
    if path is None and (unreadable := kernel.tracefs_unreadable()) is not None:
        raise KernelUnreadable(
            f"{what}: tracefs at {unreadable} is readable by root only: run as root"
        )
    if path is None:
        raise KernelUnreadable(
            f"{what}: cannot read tracefs (not mounted, or not root): {_MOUNT_FIX}"
        )
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AttachError(
            f"{what}: no such tracepoint in this kernel (no {path}); list them with"
            f" ls {path.parent.parent.parent}"
        ) from None
    except PermissionError as exc:
        raise KernelUnreadable(
            f"{what}: cannot read {path}: {exc.strerror}; {_MOUNT_FIX}"
        ) from None
    except OSError as exc:
        raise AttachError(f"{what}: cannot read {path}: {exc.strerror}; {_MOUNT_FIX}") from None
    try:
        return parse_format(text, category, name)
    except ValueError as exc:
        raise AttachError(f"{what}: {path}: {exc}") from None


_NAME = re.compile(r"[A-Za-z0-9_]+")
