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

from dataclasses import dataclass
from typing import Any, ClassVar

from .events import Layout
from .loaded import LoadedProgram
from .outputs import Channel, Output
from .periodic_reader import PeriodicChannel, PeriodicReader
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


class _StackChannel(PeriodicChannel):
    def __init__(self, output: StackCounts) -> None:
        super().__init__()
        self._output = output

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

    def reader(self, loaded: LoadedProgram) -> PeriodicReader:
        return _StackReader(self._output, loaded)

    def describe(self) -> str:
        return f"sums per stack ({self._output.keys} at most)"


class _StackReader(PeriodicReader):
    def __init__(self, output: StackCounts, loaded: LoadedProgram) -> None:
        self._user, self._kernel = output.user, output.kernel
        self._sums = loaded.table(SUMS_MAP)
        self._symbols = Symbolizer(loaded.table(STACKS_MAP))
        self._seen: dict[tuple[int, int, int, bytes], int] = {}
        super().__init__(loaded, output.period)  # its event fd last: nothing above leaks it

    @property
    def capacity(self) -> int:
        return len(self._seen) + 1

    def take(self) -> list[Any]:
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
