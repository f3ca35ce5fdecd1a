"""Whether any of a program's emitting probes is running right now.

A program generated with ``in_flight`` (see :mod:`flowtrace.codegen`)
keeps a per-CPU count of its emitting probes between the moment each
counts itself in (before it reads the clock for its record's timestamp)
and the moment it counts itself out (after its record is output).
:class:`InFlight` reads every CPU's count with one map lookup (one
``bpf(2)`` call, some microseconds): when all are zero, every record
timestamped before the caller last read ``CLOCK_MONOTONIC`` is already
in the output (see :mod:`flowtrace.reorder`).
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["InFlight"]


class InFlight:
    """Reader of the per-CPU in-flight count of a loaded program's ``table``
    (a bcc ``BPF_PERCPU_ARRAY`` of one ``u64``)."""

    def __init__(self, table: Any) -> None:
        from bcc.libbcc import lib

        self._lookup = lib.bpf_lookup_elem
        self._fd = table.map_fd
        self._key = ctypes.c_int(0)
        self._counts = table.Leaf()  # one u64 per possible CPU
        self._key_p = ctypes.cast(ctypes.byref(self._key), ctypes.c_void_p)
        self._counts_p = ctypes.cast(self._counts, ctypes.c_void_p)

    def idle(self) -> bool:
        """True when no emitting probe runs on any CPU now (False when the
        count cannot be read)."""
        if self._lookup(self._fd, self._key_p, self._counts_p) != 0:
            return False
        return not any(self._counts)
