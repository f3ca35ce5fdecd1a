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
    "comm",
    "cpu_id",
    "ktime_ns",
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


def Char(length: int, fill: str | None = None) -> KernelType:
    """A NUL-terminated ``char[length]`` field, decoded to ``str``.

    Decoding stops at the first NUL and replaces invalid UTF-8.
    """
    if length <= 0:
        raise ValueError(f"char array length must be positive, got {length}")
    return KernelType("char", length, f"S{length}", array_len=length, fill=fill)


_U8 = KernelType("u8", 1, "<u1")
_U16 = KernelType("u16", 2, "<u2")
_U32 = KernelType("u32", 4, "<u4")
_U64 = KernelType("u64", 8, "<u8")

u8 = Annotated[int, _U8]
u16 = Annotated[int, _U16]
u32 = Annotated[int, _U32]
u64 = Annotated[int, _U64]
s8 = Annotated[int, KernelType("s8", 1, "<i1")]
s16 = Annotated[int, KernelType("s16", 2, "<i2")]
s32 = Annotated[int, KernelType("s32", 4, "<i4")]
s64 = Annotated[int, KernelType("s64", 8, "<i8")]
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
