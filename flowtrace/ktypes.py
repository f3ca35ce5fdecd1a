"""Fixed-width kernel field types for event declarations.

An event field is annotated with one of these aliases; the annotation tells
flowtrace the C type the BPF program writes and how userspace decodes it::

    class Exec(Event):
        ts: ktime_ns        # filled with bpf_ktime_get_ns()
        pid: task_pid       # filled with the current process id (tgid)
        comm: task_comm     # filled with the current task's command name
        ret: s32            # filled by the probe body

The ``task_*``, ``ktime_ns`` and ``cpu_id`` types are filled automatically
before the probe body runs; every other field starts zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

__all__ = [
    "Char",
    "KernelType",
    "annotation",
    "comm",
    "cpu_id",
    "integer",
    "kernel_type",
    "ktime_ns",
    "parse_c_type",
    "s8",
    "s16",
    "s32",
    "s64",
    "task_comm",
    "task_pid",
    "task_tid",
    "task_uid",
    "u8",
    "u16",
    "u32",
    "u64",
]


@dataclass(frozen=True)
class KernelType:
    """A fixed-width C type: its C spelling, size, and numpy decoding code.

    ``fill`` is a C statement template (``{field}`` is the lvalue) run before
    the probe body; ``None`` leaves the field zeroed for the body to set.
    """

    c_type: str
    size: int
    numpy_code: str
    array_len: int = 0
    fill: str | None = None

    @property
    def align(self) -> int:
        return 1 if self.array_len else self.size

    @property
    def is_string(self) -> bool:
        return self.array_len > 0

    def c_declaration(self, name: str) -> str:
        if self.array_len:
            return f"{self.c_type} {name}[{self.array_len}];"
        return f"{self.c_type} {name};"

    def filled(self, fill: str) -> KernelType:
        return KernelType(self.c_type, self.size, self.numpy_code, self.array_len, fill)

    def spelled(self) -> str:
        """The C spelling recordings list: ``u32``, ``s64``, ``char[16]``."""
        return f"{self.c_type}[{self.array_len}]" if self.is_string else self.c_type

    def unfilled(self) -> KernelType:
        """The same type, without automatic filling."""
        return KernelType(self.c_type, self.size, self.numpy_code, self.array_len)


def Char(length: int, fill: str | None = None) -> KernelType:
    """A NUL-terminated ``char[length]`` field, decoded to ``str``.

    Decoding stops at the first NUL and replaces invalid UTF-8. ``length``
    is a whole number of bytes from 1 to :data:`MAX_STRING` (it becomes a C
    array size, so nothing else is accepted).
    """
    if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= MAX_STRING:
        raise ValueError(
            f"char array length must be a whole number from 1 to {MAX_STRING}, got {length!r}"
        )
    return KernelType("char", length, f"S{length}", array_len=length, fill=fill)


MAX_STRING = 4096
"""The longest ``Char(N)`` field, in bytes."""

_U8 = KernelType("u8", 1, "<u1")
_U16 = KernelType("u16", 2, "<u2")
_U32 = KernelType("u32", 4, "<u4")
_U64 = KernelType("u64", 8, "<u8")

u8 = Annotated[int, _U8]
u16 = Annotated[int, _U16]
u32 = Annotated[int, _U32]
u64 = Annotated[int, _U64]
_S8 = KernelType("s8", 1, "<i1")
_S16 = KernelType("s16", 2, "<i2")
_S32 = KernelType("s32", 4, "<i4")
_S64 = KernelType("s64", 8, "<i8")
s8 = Annotated[int, _S8]
s16 = Annotated[int, _S16]
s32 = Annotated[int, _S32]
s64 = Annotated[int, _S64]
comm = Annotated[str, Char(16)]
"""A task command name (``char[16]``), filled by the probe body."""

ktime_ns = Annotated[int, _U64.filled("{field} = bpf_ktime_get_ns();")]
"""Nanoseconds of CLOCK_MONOTONIC when the probe fired."""
task_pid = Annotated[int, _U32.filled("{field} = bpf_get_current_pid_tgid() >> 32;")]
"""The current process id (the kernel's tgid)."""
task_tid = Annotated[int, _U32.filled("{field} = (u32)bpf_get_current_pid_tgid();")]
"""The current thread id (the kernel's pid)."""
task_uid = Annotated[int, _U32.filled("{field} = (u32)bpf_get_current_uid_gid();")]
"""The current task's real user id."""
task_comm = Annotated[str, Char(16, "bpf_get_current_comm(&{field}, sizeof({field}));")]
"""The current task's command name."""
cpu_id = Annotated[int, _U32.filled("{field} = bpf_get_smp_processor_id();")]
"""The CPU the probe fired on."""


_INTEGERS = {t.c_type: t for t in (_U8, _U16, _U32, _U64, _S8, _S16, _S32, _S64)}
_MAX_CHARS = 1 << 16


def integer(size: int, signed: bool) -> KernelType:
    """The integer type of ``size`` bytes (1, 2, 4 or 8): ``u32``, ``s64``..."""
    found = _INTEGERS.get(f"{'s' if signed else 'u'}{size * 8}")
    if found is None:
        raise ValueError(f"no {size}-byte integer type")
    return found


def parse_c_type(spelling: str) -> KernelType:
    """The type :meth:`KernelType.spelled` spells ``spelling`` (``u32``,
    ``char[16]``); ``ValueError`` for anything else."""
    if spelling in _INTEGERS:
        return _INTEGERS[spelling]
    length = spelling.removeprefix("char[").removesuffix("]")
    digits = length.isascii() and length.isdecimal()
    if spelling == f"char[{length}]" and digits and 0 < int(length) <= _MAX_CHARS:
        return Char(int(length))
    raise ValueError(f"not a kernel type: {spelling[:40]!r} (u8..u64, s8..s64, char[N])")


def kernel_type(declared: object) -> KernelType | None:
    """The kernel type of ``declared`` (``u32``, ``task_pid``, ``Char(64)``), or None."""
    if isinstance(declared, KernelType):
        return declared
    found = [m for m in getattr(declared, "__metadata__", ()) if isinstance(m, KernelType)]
    return found[0] if found else None


def annotation(ktype: KernelType) -> object:
    """An event field annotation of ``ktype``: ``Annotated[int | str, ktype]``."""
    return Annotated[str, ktype] if ktype.is_string else Annotated[int, ktype]
