"""An output that counts in the kernel and is read at intervals.

Probes call ``ft_count(slot)``; a per-CPU array of ``slots`` counters holds
the counts (no atomic operations, no record per hit). Every ``period``
seconds the source's loop reads the array, sums each slot over the CPUs and
emits one event per slot whose count grew since the previous read, made by
``make(slot, increase, ts)``. The counters are never cleared: increases are
differences of totals, so no hit falls between a read and a reset. After the
probes detach the loop reads once more, so the increases a run emits add up
to exactly what was counted. A slot outside the array is counted as lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import Layout
from .loaded import LoadedProgram
from .outputs import Channel, Output
from .periodic_reader import PeriodicChannel, PeriodicReader

__all__ = ["COUNTS_MAP", "CounterArray"]

COUNTS_MAP = "ft_counts"


@dataclass(frozen=True)
class CounterArray(Output):
    """Counts per slot (``0 <= slot < slots``) kept in the kernel, emitted
    as ``make(slot, increase, ts)`` events every ``period`` seconds (``ts``:
    CLOCK_MONOTONIC nanoseconds of the read) and once more at the end."""

    takes_operators = False

    make: Callable[[int, int, int], Any]
    slots: int = 256
    period: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.slots <= 65536:
            raise ValueError(f"slots must be 1 to 65536, not {self.slots}")
        if not self.period > 0:
            raise ValueError(f"period must be positive seconds, not {self.period}")

    def layout(self, event: type[Any]) -> Layout[Any] | None:
        return None  # the probes fill no record: they count

    def describe(self, event: type[Any]) -> str:
        return (
            f"{event.__name__} every {self.period:g} s from {self.slots} counters"
            " kept in the kernel (per-CPU array)"
        )

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return _CounterChannel(self)


class _CounterChannel(PeriodicChannel):
    def __init__(self, output: CounterArray) -> None:
        super().__init__()
        self._output = output

    def declarations(self) -> str:
        return f"""\
BPF_PERCPU_ARRAY({COUNTS_MAP}, u64, {self._output.slots});

static __always_inline void ft_count(u32 slot) {{
    u64 *n = {COUNTS_MAP}.lookup(&slot);
    if (n)
        (*n)++;
    else
        ft_count_lost();
}}
"""

    def reader(self, loaded: LoadedProgram) -> PeriodicReader:
        return _CounterReader(self._output, loaded)

    def describe(self) -> str:
        return f"{self._output.slots} per-CPU counters every {self._output.period:g} s"


class _CounterReader(PeriodicReader):
    def __init__(self, output: CounterArray, loaded: LoadedProgram) -> None:
        self._output = output
        self._table = loaded.table(COUNTS_MAP)
        self._seen = np.zeros(output.slots, dtype=np.uint64)
        super().__init__(loaded, output.period)  # its event fd last: nothing above leaks it

    @property
    def capacity(self) -> int:
        return self._output.slots

    def _totals(self) -> np.ndarray[Any, np.dtype[np.uint64]]:
        totals = np.zeros(self._output.slots, dtype=np.uint64)
        for key, per_cpu in self._table.items():
            totals[key.value] = sum(per_cpu)
        return totals

    def take(self) -> list[Any]:
        totals = self._totals()
        grown = np.flatnonzero(totals != self._seen)
        ts = time.monotonic_ns()
        made = [self._output.make(int(s), int(totals[s] - self._seen[s]), ts) for s in grown]
        self._seen = totals
        return made
