"""Whether any of a program's emitting probes is running right now.

A program generated with ``in_flight`` (see :mod:`flowtrace.codegen`)
keeps, for each CPU, a count of its emitting probes between the moment each
counts itself in (before it reads the clock for its record's timestamp)
and the moment it counts itself out (after its record is output). The
counts live in an array the kernel lets user space map
(``BPF_F_MMAPABLE``): :class:`InFlight` reads them as plain memory, with
no system call. When all are zero, every record timestamped before the
caller last read ``CLOCK_MONOTONIC`` is already in the output (see
:mod:`flowtrace.reorder`).

Ordering: the probes' atomic adds are full barriers on x86-64, so a probe
is counted before it reads the clock. On the reader's side, reading the
time stamp counter does not order the loads after it, but the interpreter
runs far more instructions between the clock and this read than a CPU
keeps in flight, so the count is read after the clock. (Were an event
misjudged, it would be passed on as late and counted, never lost.)
"""

from __future__ import annotations

import mmap
from typing import Any

from .bpf_maps import possible_cpus
from .codegen import IN_FLIGHT_SLOT

__all__ = ["InFlight"]


class InFlight:
    """Reader of the in-flight counts of a loaded program's ``table`` (the
    ``ft_in_flight`` array: one cache-line slot per possible CPU, the count
    first). Holds a read-only mapping of it until :meth:`close`."""

    def __init__(self, table: Any) -> None:
        size = possible_cpus() * IN_FLIGHT_SLOT
        length = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._memory = mmap.mmap(table.map_fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        self._counts = memoryview(self._memory).cast("Q")[: size // 8 : IN_FLIGHT_SLOT // 8]

    def idle(self) -> bool:
        """True when no emitting probe runs on any CPU now."""
        return not any(self._counts)

    def close(self) -> None:
        self._counts.release()
        self._memory.close()
