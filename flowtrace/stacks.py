"""Stack traces: captured in the kernel, named in user space.

A program keeps stacks in a ``BPF_STACK_TRACE`` map (:data:`STACKS_MAP`) and
refers to them by id (``bpf_get_stackid``): :func:`stack_declarations` gives
the map and ``ft_stack_ids(ctx, &key)``, which fills a :data:`STACK_KEY`
with the current task's pid, command name and user and kernel stack ids. A
negative id means no stack was kept (an error, such as a full map or a hash
collision); it is named ``[missed user stack]`` / ``[missed kernel stack]``,
except -EFAULT, which means there is no such stack (a kernel thread has no
user stack, a sample taken in user mode no kernel stack): no frames.

User space names each address: kernel addresses from ``/proc/kallsyms``
(read once per :class:`Symbolizer`), user addresses from the process's
``/proc/PID/maps`` (read once per process and symbolizer) and the ELF
symbols of the mapped file (:mod:`flowtrace.elf_symbols`, cached per file).
An address no symbol covers (JIT code, a stripped binary, a process that
already exited) is shown as its address in hex.
Stacks are listed innermost frame first.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .elf_symbols import elf_functions

__all__ = [
    "MISSED_KERNEL",
    "MISSED_USER",
    "STACKS_MAP",
    "STACK_KEY",
    "KernelSymbols",
    "Symbolizer",
    "UserSymbols",
    "folded",
    "stack_declarations",
]

STACKS_MAP = "ft_stacks"
STACK_KEY = "struct ft_stack_key"
MISSED_USER = "[missed user stack]"
MISSED_KERNEL = "[missed kernel stack]"
_NO_STACK = -errno.EFAULT


def stack_declarations(stacks: int = 16384, user: bool = True, kernel: bool = True) -> str:
    """C: the stack map (``stacks`` stacks at most), the key struct and
    ``ft_stack_ids(ctx, &key)``; a kind of stack not asked for gets id -1."""
    user_id = f"{STACKS_MAP}.get_stackid(ctx, BPF_F_USER_STACK)" if user else "-1"
    kernel_id = f"{STACKS_MAP}.get_stackid(ctx, 0)" if kernel else "-1"
    return f"""\
BPF_STACK_TRACE({STACKS_MAP}, {stacks});

{STACK_KEY} {{
    u32 pid;
    s32 user_stack;
    s32 kernel_stack;
    char comm[16];
}};

// The current task and where it is: its pid, command name and stack ids.
static __always_inline void ft_stack_ids(void *ctx, {STACK_KEY} *key) {{
    key->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&key->comm, sizeof(key->comm));
    key->user_stack = {user_id};
    key->kernel_stack = {kernel_id};
}}
"""


class KernelSymbols:
    """Kernel text symbols from ``/proc/kallsyms`` (root sees the addresses)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        found = []
        try:
            with open(path, "rb") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in (b"t", b"T", b"w", b"W"):
                        address = int(parts[0], 16)
                        if address:
                            found.append((address, parts[2].decode()))
        except OSError:
            pass
        found.sort()
        self._addresses = [a for a, _ in found]
        self._names = [n for _, n in found]

    def name(self, address: int, with_offset: bool = False) -> str:
        at = bisect.bisect_right(self._addresses, address) - 1
        if at < 0:
            return f"{address:#x}"
        delta = address - self._addresses[at]
        return f"{self._names[at]}+{delta:#x}" if with_offset and delta else self._names[at]


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    offset: int
    path: str


class UserSymbols:
    """The functions of one process's address space, from its maps as they
    were when first asked (a process that exited names nothing)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        mappings = []
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
                        continue
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    mappings.append(_Mapping(start, end, int(parts[2], 16), parts[5].strip()))
        except OSError:
            pass
        self._mappings = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self._mappings]

    def name(self, address: int, with_offset: bool = False) -> str:
        at = bisect.bisect_right(self._starts, address) - 1
        if at < 0 or address >= self._mappings[at].end:
            return f"{address:#x}"
        m = self._mappings[at]
        # the file as the process sees it (its own root, for a container)
        functions = elf_functions(f"/proc/{self.pid}/root{m.path}")
        found = functions.name(address - m.start + m.offset, with_offset)
        return found if found is not None else f"{address:#x}"


class Symbolizer:
    """Names the frames of stacks kept in a program's stack map, as function
    names (with ``+0xN`` ``offsets``); keeps the kernel's symbols and each
    process's maps for its own lifetime (one run), at most
    ``max_processes`` processes (then it starts afresh)."""

    def __init__(self, stacks: Any, max_processes: int = 1024, offsets: bool = False) -> None:
        self._stacks = stacks
        self._offsets = offsets
        self._kernel: KernelSymbols | None = None
        self._processes: dict[int, UserSymbols] = {}
        self._max = max_processes

    def addresses(self, stack_id: int) -> list[int]:
        """The addresses of stack ``stack_id``, innermost first."""
        return [int(a) for a in self._stacks.walk(stack_id)]

    def kernel(self, stack_id: int) -> list[str]:
        if stack_id < 0:
            return [] if stack_id == _NO_STACK else [MISSED_KERNEL]
        if self._kernel is None:
            self._kernel = KernelSymbols()
        return [self._kernel.name(a, self._offsets) for a in self.addresses(stack_id)]

    def user(self, stack_id: int, pid: int) -> list[str]:
        if stack_id < 0:
            return [] if stack_id == _NO_STACK else [MISSED_USER]
        symbols = self._processes.get(pid)
        if symbols is None:
            if len(self._processes) >= self._max:
                self._processes.clear()
            symbols = self._processes[pid] = UserSymbols(pid)
        return [symbols.name(a, self._offsets) for a in self.addresses(stack_id)]


def folded(comm: str, user: Sequence[str], kernel: Sequence[str]) -> str:
    """One stack as flamegraph.pl reads it: ``comm;outermost;...;innermost``,
    user frames then kernel frames (bcc's profile -f)."""
    return ";".join([comm, *reversed(user), *reversed(kernel)])
