"""What a window computes over its events: count, sum, min, max, rate,
collect (and, in sibling modules, histograms and count tables).

An :class:`Aggregate` keeps one accumulator per window interval (and per
key when the window groups by key). ``add`` folds a list of events into an
accumulator (one call per batch and group, so the per-event work is a
comprehension); ``merge`` combines the accumulators of consecutive intervals
into a sliding window's; ``result`` turns one into a record. To write your
own, subclass :class:`Aggregate` and pass it to
:func:`~flowtrace.operators.window`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from ..context import StageContext
from ..kernel_forms import AggregateKind, UserOnly
from ..records import Record, WindowResult
from ._fields import ValueGetter, ValueSpec, positive_int

__all__ = ["Aggregate", "Collect", "Count", "Max", "Min", "Rate", "Sum"]

T = TypeVar("T")
A = TypeVar("A")


class Aggregate(ABC, Generic[T, A]):
    """A per-window computation with accumulators of type ``A``.

    An aggregate is configuration: each run of a window operator opens its
    own shallow copy (``open`` is called on the copy; use ``self.ctx.stats``
    there to count what the aggregate drops), so keep per-run state in
    ``open`` or in the accumulators and never change what ``__init__`` set.
    ``merge`` must return a new accumulator and leave its inputs unchanged
    (an interval's accumulator is shared by every sliding window that
    covers it); ``result`` must not change ``acc`` either.
    """

    name: str = "aggregate"
    keyed: bool = True
    """Whether the aggregate may be grouped by key (``window(..., by=...)``)."""
    record_type: ClassVar[type[Record] | None] = None
    """The type of record ``result`` returns (None: not said)."""

    def open(self, ctx: StageContext) -> None:
        self.ctx = ctx

    def reads_fields(self) -> tuple[str, ...]:
        """The event fields ``add`` reads (empty: none or unknown)."""
        return ()

    def kernel_aggregate(self) -> AggregateKind | UserOnly:
        """What it computes, when the kernel can compute it (see
        :class:`~flowtrace.kernel_forms.AggregateForm` for the accumulators
        the kernel hands back); none by default."""
        return UserOnly(
            f"the aggregate {self.name} has no in-kernel form (the kernel counts, sums,"
            " keeps min, max and histograms)"
        )

    @abstractmethod
    def new(self) -> A:
        """An empty accumulator."""

    @abstractmethod
    def add(self, acc: A, events: list[T]) -> A:
        """``acc`` with ``events`` folded in (may modify and return ``acc``)."""

    @abstractmethod
    def merge(self, accs: Sequence[A]) -> A:
        """One new accumulator holding all of ``accs`` (oldest first)."""

    @abstractmethod
    def result(self, acc: A, start: float, end: float, key: dict[str, Any] | None) -> Record:
        """The record for one window ``[start, end)`` (and key) holding ``acc``."""


class Count(Aggregate[Any, int]):
    """The number of events: ``WindowResult(aggregate="count", value=n)``."""

    name = "count"
    record_type = WindowResult

    def kernel_aggregate(self) -> AggregateKind | UserOnly:
        return AggregateKind(self.name)

    def new(self) -> int:
        return 0

    def add(self, acc: int, events: list[Any]) -> int:
        return acc + len(events)

    def merge(self, accs: Sequence[int]) -> int:
        return sum(accs)

    def result(self, acc: int, start: float, end: float, key: dict[str, Any] | None) -> Record:
        return WindowResult(
            aggregate=self.name, value=acc, key=key, window_start=start, window_end=end
        )


class Rate(Count):
    """Events per second of the window:
    ``WindowResult(aggregate="rate", value=count / (end - start))``.

    The length is the window's real one: a processing-time window that
    began before the operator opened starts at the open, and the last
    window at end of stream ends at that moment, so a rate is never spread
    over time that has not passed. A window of zero length (the stream
    ended exactly where a window begins) has no rate: ``value`` is None.
    """

    name = "rate"

    def result(self, acc: int, start: float, end: float, key: dict[str, Any] | None) -> Record:
        span = end - start
        return WindowResult(
            aggregate=self.name,
            value=acc / span if span > 0 else None,
            key=key,
            window_start=start,
            window_end=end,
        )


class _OfField(Aggregate[Any, A]):
    """An aggregate of one value per event: a field, or a function of the event."""

    record_type: ClassVar[type[Record] | None] = WindowResult

    def __init__(self, value: ValueSpec) -> None:
        self.value = ValueGetter.of(value, type(self).__name__)

    def reads_fields(self) -> tuple[str, ...]:
        return (self.value.field,) if self.value.field else ()

    def kernel_aggregate(self) -> AggregateKind | UserOnly:
        if self.value.field is None:
            return UserOnly(f"{self.name} of a value a Python function computes")
        return AggregateKind(self.name, self.value.field)

    def _result(self, value: Any, start: float, end: float, key: dict[str, Any] | None) -> Record:
        return WindowResult(
            aggregate=self.name,
            value=value,
            key=key,
            field=self.value.name,
            window_start=start,
            window_end=end,
        )


class Sum(_OfField[Any]):
    """The sum of a field (or function) over the window's events (0 when empty)."""

    name = "sum"

    def new(self) -> Any:
        return 0

    def add(self, acc: Any, events: list[Any]) -> Any:
        return acc + sum(map(self.value.get, events))

    def merge(self, accs: Sequence[Any]) -> Any:
        return sum(accs)

    def result(self, acc: Any, start: float, end: float, key: dict[str, Any] | None) -> Record:
        return self._result(acc, start, end, key)


class Min(_OfField[Any]):
    """The smallest value of a field (or function) in the window; None when empty."""

    name = "min"

    def new(self) -> Any:
        return None

    def add(self, acc: Any, events: list[Any]) -> Any:
        if not events:
            return acc
        low = min(map(self.value.get, events))
        return low if acc is None or low < acc else acc

    def merge(self, accs: Sequence[Any]) -> Any:
        present = [a for a in accs if a is not None]
        return min(present) if present else None

    def result(self, acc: Any, start: float, end: float, key: dict[str, Any] | None) -> Record:
        return self._result(acc, start, end, key)


class Max(_OfField[Any]):
    """The largest value of a field (or function) in the window; None when empty."""

    name = "max"

    def new(self) -> Any:
        return None

    def add(self, acc: Any, events: list[Any]) -> Any:
        if not events:
            return acc
        high = max(map(self.value.get, events))
        return high if acc is None or high > acc else acc

    def merge(self, accs: Sequence[Any]) -> Any:
        present = [a for a in accs if a is not None]
        return max(present) if present else None

    def result(self, acc: Any, start: float, end: float, key: dict[str, Any] | None) -> Record:
        return self._result(acc, start, end, key)


class Collect(Aggregate[T, list[T]], Generic[T]):
    """The window's events themselves, in arrival order:
    ``WindowResult(aggregate="collect", value=[events])``.

    Bounded: at most ``max_items`` events per window interval (and key);
    beyond that, events are counted as dropped (``collect_limit``) and left
    out. A sliding window merges ``size / slide`` intervals, so it can hold
    up to that many times ``max_items``.
    """

    name = "collect"
    record_type = WindowResult

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = positive_int(max_items, f"Collect(max_items={max_items!r}): max_items")

    def new(self) -> list[T]:
        return []

    def add(self, acc: list[T], events: list[T]) -> list[T]:
        room = self.max_items - len(acc)
        if len(events) > room:
            self.ctx.stats.drop("collect_limit", len(events) - max(room, 0))
            events = events[: max(room, 0)]
        acc.extend(events)
        return acc

    def merge(self, accs: Sequence[list[T]]) -> list[T]:
        return [e for acc in accs for e in acc]

    def result(self, acc: list[T], start: float, end: float, key: dict[str, Any] | None) -> Record:
        return WindowResult(
            aggregate=self.name, value=list(acc), key=key, window_start=start, window_end=end
        )
