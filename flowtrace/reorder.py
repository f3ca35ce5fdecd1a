"""Putting a kernel source's events in timestamp order, within a bounded window.

Per-CPU perf buffers are read one CPU after another, and a ring buffer
orders records by when they were reserved, not by the timestamp the probe
took before: so events of different CPUs arrive slightly out of order.
:class:`Reorder` holds each event until the reader's clock is ``window``
past its timestamp, then releases the held events in timestamp order. An
event whose timestamp is older than one already released (it arrived more
than ``window`` late) is passed on at once, with the next release, and
counted as ``late``: never dropped, never reordered into the past.

The reader's clock is read *before* each read of the kernel's buffer
(:class:`~flowtrace.kernel_source.KernelSource` does): a record a read
leaves behind was committed after that moment, unless the read stopped at
its bound (8192 events) with records still waiting. A ring buffer hands
records over in the order they were reserved, so those are not older; per-CPU
perf rings are read one after another, so a read cut at its bound during a
burst can leave older records in the rings it did not reach: they come out
``late`` (counted, never lost). So an event can only come
late if its probe took more than about ``window`` between reading the
clock and committing the record (a probe preempted in between), however
long the reader itself was delayed. Probes take microseconds, so the
default window is 1 ms: events wait at most that long to be put in order.

Most events need not wait that long. A program flowtrace generates counts
its emitting probes in flight per CPU (see :mod:`flowtrace.codegen`): a
probe counts itself in before it reads the clock for its timestamp and out
after its record is output. When the reader reads its clock (``T0``),
then finds every CPU's count at zero, then reads the buffer to its end,
every record timestamped before ``T0`` is in what it read: its probe had
counted itself in before ``T0`` and so had finished, record output, when
the count read zero. So those events are released at once, in order
(``settled_ns`` of :meth:`Reorder.push`); the window still applies to the
others. The loop reads the count (plain loads from an array mapped into
its memory, no system call) between its clock and each read that
follows a read of fewer than 512 records: the reader keeps up, and one
that is behind reads again at once anyway. When the
count is not zero (a probe running, perhaps interrupted on its CPU), or
the program has no count (a source whose C flowtrace does not wrap), the
window alone applies. This relies on the probe's clock
(``bpf_ktime_get_ns()``) and the reader's agreeing to within the time
the reader takes to read the count after ``T0``, and on
the timestamp being the one the probe took itself (a body that sets it
to a time kept by another probe makes its events come late, under either
rule, by as much as that time is older).

Bounds: at most ``limit`` events are held; past that the oldest are
released early (a burst larger than the window can hold comes out in order
up to that point). Events wait at most ``window`` (the reader wakes for
them, see :meth:`Reorder.wait`). Timestamps and the reader's clock are both
``CLOCK_MONOTONIC`` nanoseconds (``bpf_ktime_get_ns()``,
``time.monotonic_ns()``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from operator import attrgetter
from typing import Any

__all__ = ["DEFAULT_LIMIT", "DEFAULT_WINDOW", "Reorder"]

DEFAULT_WINDOW = 0.001
"""Seconds an event is held for earlier events from other CPUs (1 ms)."""
DEFAULT_LIMIT = 1 << 16
"""Most events held at once."""


class Reorder:
    """Releases events in order of their ``field`` (nanoseconds), each once
    the clock is ``window`` seconds past it; see the module docstring.
    Made per run; ``late`` counts events released out of order."""

    def __init__(
        self, field: str, window: float = DEFAULT_WINDOW, limit: int = DEFAULT_LIMIT
    ) -> None:
        if not window >= 0:
            raise ValueError(f"reorder window {window!r} must be >= 0 seconds")
        if limit < 1:
            raise ValueError(f"reorder limit {limit!r} must be at least 1")
        self.field = field
        self.window_ns = round(window * 1e9)
        self.limit = limit
        self.late = 0
        self._key: Callable[[Any], int] = attrgetter(field)
        self._held: list[Any] = []
        self._last = -(1 << 63)  # the newest timestamp released

    @property
    def held(self) -> int:
        """Events held now."""
        return len(self._held)

    def push(
        self, batch: list[Any], now_ns: int, settled_ns: int | None = None
    ) -> list[Any]:
        """Take ``batch`` (read at ``now_ns``); return what is due, in order.
        ``settled_ns``: no event older than this is still to come (the
        in-flight rule of the module docstring), so those held are due now."""
        held = self._held + batch if self._held else list(batch)
        key = self._key
        held.sort(key=key)  # stable, and nearly linear on runs already in order
        due = bisect.bisect_right(held, now_ns - self.window_ns, key=key)
        if settled_ns is not None:
            due = max(due, bisect.bisect_left(held, settled_ns, key=key))
        due = max(due, len(held) - self.limit)
        out, self._held = held[:due], held[due:]
        return self._released(out)

    def flush(self) -> list[Any]:
        """Everything held, in order (at the end of a run)."""
        out, self._held = self._held, []
        return self._released(out)

    def wait(self, now_ns: int) -> float | None:
        """Seconds until the oldest held event is due (None: none held)."""
        if not self._held:
            return None
        return max(0, self._key(self._held[0]) + self.window_ns - now_ns) / 1e9

    def _released(self, out: list[Any]) -> list[Any]:
        if out:
            key = self._key
            self.late += bisect.bisect_left(out, self._last, key=key)
            self._last = max(self._last, key(out[-1]))
        return out
