"""Log2 and linear histograms, with bcc's bucket indexes.

A log2 histogram puts a value ``v`` in slot ``bpf_log2l(v)``, exactly as
bcc's BPF helper does for an unsigned 64-bit value: ``floor(log2(v)) + 1``
for ``v >= 1``, and slot 1 for ``v == 0`` too (the helper returns 1 for 0,
which is why bcc prints the first row as ``0 -> 1``). Slot ``i >= 2`` holds
``2**(i-1) .. 2**i - 1``. A linear histogram puts ``v`` in slot ``v`` (bcc's
``print_linear_hist`` prints the slot as the value).

Values are taken as the kernel's ``u64`` would hold them: integers modulo
2**64 (a negative value lands in slot 64, as it would in a BPF map), floats
truncated with ``int()``; ``divisor`` then divides that ``u64`` (integer
division), like ``bytes / 1024`` in bitehist's C, so ``-1`` with divisor
1024 is ``(u64)-1 / 1024`` (slot 54), as in the kernel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..kernel_forms import AggregateKind, UserOnly
from ..records import Bucket, Histogram, Record
from ._fields import KeySpec, ValueSpec, positive_int
from .aggregates import _OfField
from .windowing import ProcessingTime, WindowClock, Windower
from .windows import DEFAULT_MAX_KEYS, Window

__all__ = [
    "LOG2_SLOTS",
    "Linear",
    "Log2",
    "linear_histogram",
    "log2_bounds",
    "log2_histogram",
    "log2_index",
]

U64 = (1 << 64) - 1
LOG2_SLOTS = 65
"""Slots of a log2 histogram (bcc's ``log2_index_max``): 0..64."""


def log2_index(value: int) -> int:
    """bcc's ``bpf_log2l(value)`` for ``value`` as an unsigned 64-bit integer."""
    return (int(value) & U64).bit_length() or 1


def log2_bounds(slot: int) -> tuple[int, int]:
    """The values ``(low, high)`` a log2 slot holds, as bcc prints them."""
    if not 1 <= slot < LOG2_SLOTS:
        raise ValueError(f"log2 slot {slot} out of range 1..{LOG2_SLOTS - 1}")
    if slot == 1:
        return 0, 1
    return 1 << (slot - 1), (1 << slot) - 1


def _as_u64(values: list[Any]) -> list[int]:
    """The values as the kernel's u64 holds them (the slow path)."""
    return [int(v) & U64 for v in values]


def _u64_quotients(values: list[Any], divisor: int) -> list[int]:
    """Each value as the kernel's u64, integer-divided by ``divisor``: the
    conversion comes first, as in C (``(u64)v / divisor``)."""
    if values and {*map(type, values)} == {int} and min(values) >= 0 and max(values) <= U64:
        return [v // divisor for v in values]  # already u64: the fast path
    return [(int(v) & U64) // divisor for v in values]


class _Histogram(_OfField[Any]):
    scale = ""
    record_type = Histogram

    def __init__(self, value: ValueSpec, unit: str, divisor: int) -> None:
        self.divisor = positive_int(divisor, f"{type(self).__name__}: divisor")
        super().__init__(value)
        self.unit = unit

    def kernel_aggregate(self) -> AggregateKind | UserOnly:
        if self.value.field is None:
            return UserOnly("a histogram of a value a Python function computes")
        top = getattr(self, "max_index", 0)
        return AggregateKind(self.scale, self.value.field, divisor=self.divisor, max_index=top)

    def values(self, events: list[Any]) -> list[Any]:
        """The events' values; with a divisor, as ``(u64)value / divisor``
        (without one, ``add`` converts what needs converting)."""
        return self.quotients(list(map(self.value.get, events)))

    def quotients(self, values: list[Any]) -> list[Any]:
        """``values`` as ``(u64)value / divisor`` (unchanged without a divisor)."""
        return values if self.divisor == 1 else _u64_quotients(values, self.divisor)

    def histogram(
        self,
        buckets: list[Bucket],
        start: float,
        end: float,
        key: dict[str, Any] | None,
        total: float | None,
    ) -> Record:
        return Histogram(
            field=self.value.name,
            unit=self.unit,
            scale=self.scale,
            buckets=buckets,
            key=key,
            sum=total,
            window_start=start,
            window_end=end,
        )


class Log2(_Histogram):
    """A log2 histogram of a field (or function), as bcc's ``BPF_HISTOGRAM``
    filled with ``bpf_log2l()``: emits a :class:`~flowtrace.records.Histogram`
    with ``scale="log2"`` whose buckets run from the lowest to the highest
    non-empty slot, and the sum of the values as given divided by the
    divisor (not rounded: ``sum``). Holds 65 counters and the sum per window
    interval (and key)."""

    name = "log2"
    scale = "log2"

    def __init__(self, value: ValueSpec, unit: str = "value", divisor: int = 1) -> None:
        super().__init__(value, unit, divisor)

    def new(self) -> list[int]:
        return [0] * (LOG2_SLOTS + 1)  # the slots, then the values' sum

    def add(self, acc: list[int], events: list[Any]) -> list[int]:
        given = list(map(self.value.get, events))
        if not given:
            return acc
        acc[LOG2_SLOTS] += sum(given)
        values = self.quotients(given)
        try:
            if min(values) < 0 or max(values) > U64:
                values = _as_u64(values)
            slots = Counter(map(int.bit_length, values))
        except TypeError:  # floats: truncate like a C conversion
            slots = Counter(map(int.bit_length, _as_u64(values)))
        for slot, count in slots.items():
            acc[slot or 1] += count  # bpf_log2l(0) == 1
        return acc

    def merge(self, accs: Sequence[list[int]]) -> list[int]:
        return [sum(column) for column in zip(*accs, strict=True)]

    def result(
        self, acc: list[int], start: float, end: float, key: dict[str, Any] | None
    ) -> Record:
        used = [i for i, count in enumerate(acc[:LOG2_SLOTS]) if count]
        buckets = (
            [Bucket(*log2_bounds(i), acc[i]) for i in range(used[0], used[-1] + 1)] if used else []
        )
        total = acc[LOG2_SLOTS] / self.divisor
        return self.histogram(buckets, start, end, key, total)


class Linear(_Histogram):
    """A linear histogram: value ``v`` (after ``divisor``) counts in slot
    ``v``, as bcc's ``print_linear_hist`` shows slots. Emits a
    :class:`~flowtrace.records.Histogram` with ``scale="linear"`` whose
    buckets have ``low == high == slot``, and the sum of the slots counted
    (``sum``: the values after the divisor). Bounded: slots ``0..max_index``
    (bcc's limit is 1024); values outside are counted as dropped
    (``out_of_range``) and left out."""

    name = "linear"
    scale = "linear"

    def __init__(
        self, value: ValueSpec, unit: str = "value", divisor: int = 1, max_index: int = 1024
    ) -> None:
        super().__init__(value, unit, divisor)
        self.max_index = positive_int(max_index, "Linear: max_index", allow_zero=True)

    def new(self) -> Counter[int]:
        return Counter()

    def add(self, acc: Counter[int], events: list[Any]) -> Counter[int]:
        values = self.values(events)
        if not values:
            return acc
        if not all(isinstance(v, int) for v in values):
            values = [int(v) for v in values]
        if min(values) < 0 or max(values) > self.max_index:
            kept = [v for v in values if 0 <= v <= self.max_index]
            self.ctx.stats.drop("out_of_range", len(values) - len(kept))
            values = kept
        acc.update(values)
        return acc

    def merge(self, accs: Sequence[Counter[int]]) -> Counter[int]:
        total: Counter[int] = Counter()
        for acc in accs:
            total.update(acc)
        return total

    def result(
        self, acc: Counter[int], start: float, end: float, key: dict[str, Any] | None
    ) -> Record:
        used = [i for i, count in acc.items() if count]
        buckets = (
            [Bucket(i, i, acc.get(i, 0)) for i in range(min(used), max(used) + 1)] if used else []
        )
        return self.histogram(buckets, start, end, key, float(sum(i * n for i, n in acc.items())))


def log2_histogram(
    value: ValueSpec,
    *,
    unit: str = "value",
    divisor: int = 1,
    by: KeySpec | None = None,
    every: Windower | None = None,
    clock: WindowClock = ProcessingTime(),
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    name: str = "",
) -> Window[Any]:
    """A log2 histogram of ``value`` with bcc's buckets (see :class:`Log2`).

    Emitted at end of stream by default (bitehist prints it on Ctrl-C):
    ``log2_histogram("bytes", unit="kbytes", divisor=1024)``. With
    ``every=Tumbling(S)``: one histogram per S seconds (vfsreadlat;
    ``limit=N`` stops the pipeline after N); ``every=Sliding(...)`` makes it
    sliding, ``by`` one histogram per key, ``clock=EventTime(...)`` event
    time. See :class:`~flowtrace.operators.Window` for timing, bounds and
    end of stream.
    """
    hist = Log2(value, unit, divisor)
    return Window(hist, every=every, clock=clock, by=by, max_keys=max_keys, limit=limit,
                  name=name or "log2_histogram")  # fmt: skip


def linear_histogram(
    value: ValueSpec,
    *,
    unit: str = "value",
    divisor: int = 1,
    max_index: int = 1024,
    by: KeySpec | None = None,
    every: Windower | None = None,
    clock: WindowClock = ProcessingTime(),
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    name: str = "",
) -> Window[Any]:
    """A linear histogram of ``value`` (see :class:`Linear`); emission and
    windows as :func:`log2_histogram`, timing, bounds and end of stream as
    :class:`~flowtrace.operators.Window`."""
    hist = Linear(value, unit, divisor, max_index)
    return Window(hist, every=every, clock=clock, by=by, max_keys=max_keys, limit=limit,
                  name=name or "linear_histogram")  # fmt: skip
