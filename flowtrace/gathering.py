"""When a kernel source's loop lets records gather before reading again.

A read that returns a small batch (fewer than 512 records) means the reader
is ahead of the producers. Reading again at once would wake the loop, and
send a batch through every stage, for every record or two: cheap per
event only at low rates. So after such a read the loop may sleep, letting
records gather into the next batch, but only when that gathers something:

* it waits only if, at the rate records arrived lately (measured over at
  least 50 ms), ``16`` or more would arrive within the bound ``latency``;
  below that rate (1,600 records/s with the default 10 ms bound) every
  record goes on as soon as the reader wakes for it, with no wait;
* it waits the shorter of ``latency`` and a quarter of the time the
  kernel's buffer takes to fill at that rate (gathering never risks
  losing records).

So no record waits longer than ``latency`` to be gathered (an event the
reorder window still holds when a wait begins goes on after it: at most
``latency`` plus the window in all); at high rates
batches grow (some 1,000 records at 100,000 records/s with the default
bound), and when the reader falls behind (reads return 512 records or
more) it never sleeps at all.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LATENCY", "Gathering"]

DEFAULT_LATENCY = 0.01
"""Seconds a record may wait to be gathered with others (10 ms)."""

SMALL_BATCH = 512
"""A read returning fewer records than this is keeping up easily."""

_WORTH_GATHERING = 16  # records a wait must bring to be worth it
_RATE_SPAN = 0.05  # seconds of reads the rate is measured over


class Gathering:
    """One run's gathering policy (see the module docstring): after each
    non-empty read, :meth:`after_read` says how long to sleep before the
    next read. ``latency`` is the bound in seconds (0: never wait);
    ``capacity``, about how many records the kernel buffer holds."""

    def __init__(self, latency: float, capacity: int) -> None:
        if not latency >= 0:
            raise ValueError(f"latency {latency!r} must be >= 0 seconds")
        self.latency = latency
        self.capacity = capacity
        self.rate = 0.0
        """Records per second over the last completed span of reads."""
        self.fast = False
        """Whether records come fast: the last read returned 512 or more, or
        the rate makes gathering worth it (perf rings then stop waking the
        reader per record, see :class:`flowtrace.transport.PerfBufferReader`)."""
        self._span_start: float | None = None
        self._span_records = 0

    def after_read(self, records: int, now: float) -> float:
        """Seconds to sleep after a read of ``records`` records (0 too) at
        ``now`` (seconds, the loop's clock)."""
        if self._span_start is None:  # the rate is measured from here on
            self._span_start = now
            return 0.0
        self._span_records += records
        elapsed = now - self._span_start
        if elapsed >= _RATE_SPAN:
            self.rate = self._span_records / elapsed
            self._span_start, self._span_records = now, 0
        rate = self.rate
        worth = rate * self.latency >= _WORTH_GATHERING
        self.fast = records >= SMALL_BATCH or worth
        if records == 0 or records >= SMALL_BATCH or not worth:
            return 0.0
        return min(self.latency, 0.25 * self.capacity / rate)

    def poll(self, max_wait: float) -> float:
        """Longest to wait for a wake-up after a read that brought nothing:
        while records come fast, no longer than the bound (at least 1 ms),
        as buffers may not wake the reader per record then."""
        return min(max_wait, max(self.latency, 0.001)) if self.fast else max_wait
