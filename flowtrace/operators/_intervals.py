"""The state behind a window operator: accumulators per time interval and key.

Time is cut into intervals numbered by integers; window ``q`` covers the
``span`` intervals ``q - span + 1 .. q``. Each interval keeps one
accumulator (or one per key, at most ``max_keys`` keys), so an event is
folded once however many sliding windows cover it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from ..clock import with_wall_bounds
from ..context import StageContext
from ..records import Record
from ._fields import KeyGetter
from .aggregates import Aggregate

__all__ = ["Intervals", "nanoseconds"]

T = TypeVar("T")


def nanoseconds(seconds: float) -> int:
    """``seconds`` of the clock as whole nanoseconds, rounded as
    :class:`~flowtrace.clock.TickSchedule` rounds them, so interval
    arithmetic is exact (ten steps of 0.1 s are one second) and a window
    ends exactly where the runtime's tick falls."""
    return round(seconds * 1e9)


class Intervals(Generic[T]):
    """Accumulators by interval (and key), and the records of a window."""

    def __init__(
        self,
        aggregate: Aggregate[T, Any],
        key: KeyGetter | None,
        span: int,
        max_keys: int,
        ctx: StageContext,
    ) -> None:
        self.aggregate = aggregate
        self.key = key
        self.span = span
        self.max_keys = max_keys
        self.ctx = ctx
        self.accs: dict[int, Any] = {}  # interval -> acc, or key -> acc when keyed
        self.events: dict[int, int] = {}  # interval -> events folded in

    def fold(self, interval: int, events: list[T]) -> None:
        """Fold ``events`` into ``interval``; keys past ``max_keys`` are
        counted as dropped (``key_limit``)."""
        if not events:
            return
        agg = self.aggregate
        self.events[interval] = self.events.get(interval, 0) + len(events)
        if self.key is None:
            acc = self.accs[interval] if interval in self.accs else agg.new()
            self.accs[interval] = agg.add(acc, events)
            return
        groups: dict[Hashable, list[T]] = {}
        for event, key in zip(events, map(self.key.get, events), strict=True):
            group = groups.get(key)
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        accs: dict[Hashable, Any] = self.accs.setdefault(interval, {})
        for key, group in groups.items():
            if key in accs:
                accs[key] = agg.add(accs[key], group)
            elif len(accs) < self.max_keys:
                accs[key] = agg.add(agg.new(), group)
            else:
                self.ctx.stats.drop("key_limit", len(group))
                self.events[interval] -= len(group)

    def windows_with_events(self, first: int, last: int) -> list[int]:
        """Windows ``first..last`` that cover an interval holding events, in order."""
        span = self.span
        return sorted({q for i in self.accs for q in range(i, i + span) if first <= q <= last})

    def records(self, window: int, start: float, end: float, *, empty: bool) -> list[Record]:
        """The window's records: one (unkeyed; an empty result only if
        ``empty``), or one per key in order of first appearance, each with
        its bounds in wall-clock time too (from the run's clock, when it
        has wall-clock time)."""
        records = self._records(window, start, end, empty=empty)
        return with_wall_bounds(records, self.ctx.clock, start, end)

    def _records(self, window: int, start: float, end: float, *, empty: bool) -> list[Record]:
        agg = self.aggregate
        parts = [self.accs[i] for i in range(window - self.span + 1, window + 1) if i in self.accs]
        if self.key is None:
            if not parts:
                return [agg.result(agg.new(), start, end, None)] if empty else []
            acc = parts[0] if len(parts) == 1 else agg.merge(parts)
            return [agg.result(acc, start, end, None)]
        keys: dict[Hashable, None] = {}
        for accs in parts:
            keys.update(dict.fromkeys(accs))
        out = []
        for key in keys:
            of_key = [accs[key] for accs in parts if key in accs]
            acc = of_key[0] if len(of_key) == 1 else agg.merge(of_key)
            out.append(agg.result(acc, start, end, self.key.as_dict(key)))
        return out

    def release_through(self, window: int) -> None:
        """Forget the intervals no window after ``window`` covers."""
        for interval in [i for i in self.accs if i <= window - self.span + 1]:
            del self.accs[interval]
            self.events.pop(interval, None)

    def events_after(self, window: int) -> int:
        """Events folded into intervals after ``window``."""
        return sum(n for i, n in self.events.items() if i > window)

    def clear(self) -> None:
        self.accs.clear()
        self.events.clear()
