"""An output that counts (or sums) per stack in the kernel: profiles.

Probes call ``ft_count_stack(ctx, amount)`` to add ``amount`` (1 for a
sample, nanoseconds for off-CPU time) under the current task's pid, command
name and stacks, or ``ft_add_to_stack(&key, amount)`` for a key taken
earlier with ``ft_stack_ids`` (see :mod:`flowtrace.stacks`). The sums stay
in a BPF hash of at most ``keys`` entries (a key that finds it full is
counted as lost). User space reads it after the probes detach, and also
every ``period`` seconds when one is given, and emits a :class:`StackCount`
per key whose sum grew since the previous read (the increase), its stacks
named then (so a process that exited before the read shows addresses),
lowest increase first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from .events import Layout
from .loaded import LoadedProgram
from .outputs import Channel, Output, Reader
from .records import Record
from .stacks import STACK_KEY, STACKS_MAP, Symbolizer, stack_declarations

__all__ = ["SUMS_MAP", "StackCount", "StackCounts"]

SUMS_MAP = "ft_stack_sums"


class StackCount(Record, frozen=True, kw_only=True):
    """``count`` (samples, or nanoseconds for time) seen with process
    ``pid`` (command ``comm``) in this pair of stacks, innermost frame first."""

    kind: ClassVar[str] = "stack_count"
    pid: int
    comm: str
    user_stack: list[str]
    kernel_stack: list[str]
    count: int


@dataclass(frozen=True)
class StackCounts(Output):
    """Sums per (pid, comm, user stack, kernel stack) kept in the kernel;
    read as :class:`StackCount` increases after detaching, and every
    ``period`` seconds if given. ``user``/``kernel``: which stacks to keep."""

    takes_operators = False

    keys: int = 10240
    stacks: int = 16384
    period: float | None = None
    user: bool = True
    kernel: bool = True

    def __post_init__(self) -> None:
        if self.keys < 1 or self.stacks < 1:
            raise ValueError("keys and stacks must be positive")
        if self.period is not None and not self.period > 0:
            raise ValueError(f"period must be positive seconds, not {self.period}")

    def layout(self, event: type[Any]) -> Layout[Any] | None:
        return None  # the probes fill no record: they add to sums

    def describe(self, event: type[Any]) -> str:
        when = "at the end" if self.period is None else f"every {self.period:g} s and at the end"
        return f"{event.__name__} from sums per stack kept in the kernel, read {when}"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return _StackChannel(self)


class _StackChannel(Channel):
    def __init__(self, output: StackCounts) -> None:
        self._output = output
        self._reader: _StackReader | None = None

    def declarations(self) -> str:
        o = self._output
        return stack_declarations(o.stacks, o.user, o.kernel) + f"""
BPF_HASH({SUMS_MAP}, {STACK_KEY}, u64, {o.keys});

static __always_inline void ft_add_to_stack({STACK_KEY} *key, u64 amount) {{
    u64 zero = 0;
    u64 *sum = {SUMS_MAP}.lookup_or_try_init(key, &zero);
    if (sum)
        __sync_fetch_and_add(sum, amount);
    else
        ft_count_lost();
}}

static __always_inline void ft_count_stack(void *ctx, u64 amount) {{
    {STACK_KEY} key = {{}};
    ft_stack_ids(ctx, &key);
    ft_add_to_stack(&key, amount);
}}
"""

    def connect(self, loaded: LoadedProgram) -> Reader:
        self._reader = _StackReader(self._output, loaded)
        return self._reader

    def describe(self) -> str:
        return f"sums per stack ({self._output.keys} at most)"

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


class _StackReader:
    def __init__(self, output: StackCounts, loaded: LoadedProgram) -> None:
        self._period = output.period
        self._user, self._kernel = output.user, output.kernel
        self._loaded = loaded
        self._sums = loaded.table(SUMS_MAP)
        self._symbols = Symbolizer(loaded.table(STACKS_MAP))
        self._seen: dict[tuple[int, int, int, bytes], int] = {}
        self._due = time.monotonic() + (output.period or 1.0)
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def max_wait(self) -> float:
        return max(0.0, self._due - time.monotonic())

    @property
    def capacity(self) -> int:
        return len(self._seen) + 1

    def read(self, limit: int) -> list[Any]:
        now = time.monotonic()
        if now < self._due and not self._loaded.detached:
            return []
        self._due = now + (self._period or 1.0)
        if self._period is None and not self._loaded.detached:
            return []
        out = []
        for key, value in self._sums.items():
            k = (key.pid, key.user_stack, key.kernel_stack, bytes(key.comm))
            grown = value.value - self._seen.get(k, 0)
            if grown <= 0:
                continue
            self._seen[k] = value.value
            out.append(
                StackCount(
                    pid=key.pid,
                    comm=key.comm.decode("utf-8", "replace"),
                    user_stack=self._symbols.user(key.user_stack, key.pid) if self._user else [],
                    kernel_stack=self._symbols.kernel(key.kernel_stack) if self._kernel else [],
                    count=grown,
                )
            )
        out.sort(key=lambda c: c.count)  # lowest first, as bcc's profile prints them
        return out

    def pending(self) -> bool:
        return False

    def unread(self) -> int:
        return 0  # the sums are read after the probes detach

    def lost(self) -> int:
        return 0  # ft_add_to_stack() counts what it could not add

    def close(self) -> None:
        os.close(self._fd)
