"""Counting events by key: ``count(by="comm")``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import islice
from typing import Any

from ..kernel_forms import AggregateKind, UserOnly
from ..records import CountRow, CountTable, Record
from ._fields import KeyGetter, KeySpec, positive_int
from .aggregates import Aggregate
from .windowing import ProcessingTime, WindowClock, Windower
from .windows import DEFAULT_MAX_KEYS, Window

__all__ = ["CountBy", "count"]


class CountBy(Aggregate[Any, "Counter[Hashable]"]):
    """Events per key: emits one :class:`~flowtrace.records.CountTable` per
    window, rows highest count first (ties in order of first appearance).

    Bounded: at most ``max_keys`` distinct keys per window interval; events
    of further keys are counted as dropped (``key_limit``) and left out. With
    ``top=N`` the table keeps the N highest rows and ``others`` counts the
    events of the rows cut.
    """

    name = "count"
    keyed = False
    record_type = CountTable

    def __init__(
        self, by: KeySpec, *, top: int | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.key = KeyGetter.of(by, "count")
        self.top = positive_int(top, "count: top") if top is not None else None
        self.max_keys = positive_int(max_keys, "count: max_keys")

    def reads_fields(self) -> tuple[str, ...]:
        return self.key.fields

    def kernel_aggregate(self) -> AggregateKind | UserOnly:
        if not self.key.fields:
            return UserOnly("counts by a key a Python function computes")
        return AggregateKind("count_by", key=self.key.fields, max_keys=self.max_keys)

    def new(self) -> Counter[Hashable]:
        return Counter()

    def add(self, acc: Counter[Hashable], events: list[Any]) -> Counter[Hashable]:
        acc.update(map(self.key.get, events))
        if len(acc) > self.max_keys:
            # keys keep insertion order, so the ones past the bound are exactly
            # this batch's new keys first seen after the table was full
            extra = list(islice(acc, self.max_keys, None))
            self.ctx.stats.drop("key_limit", sum(map(acc.pop, extra)))
        return acc

    def merge(self, accs: Sequence[Counter[Hashable]]) -> Counter[Hashable]:
        total: Counter[Hashable] = Counter()
        for acc in accs:
            total.update(acc)
        return total

    def result(
        self, acc: Counter[Hashable], start: float, end: float, key: dict[str, Any] | None
    ) -> Record:
        ranked = sorted(acc.items(), key=lambda item: -item[1])  # stable: ties keep first-seen
        others = 0
        if self.top is not None and len(ranked) > self.top:
            others = sum(n for _, n in ranked[self.top :])
            ranked = ranked[: self.top]
        as_dict = self.key.as_dict
        return CountTable(
            rows=[CountRow(as_dict(k), n) for k, n in ranked],
            others=others,
            key_fields=list(self.key.names),
            window_start=start,
            window_end=end,
        )


def count(
    by: KeySpec,
    *,
    top: int | None = None,
    every: Windower | None = None,
    clock: WindowClock = ProcessingTime(),
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    name: str = "",
) -> Window[Any]:
    """Count events by key: a field (``"comm"``), several fields
    (``["prev_pid", "next_pid"]``), or a function.

    Emits one :class:`~flowtrace.records.CountTable` at end of stream by
    default (strlen_count prints it on Ctrl-C), or one per window with
    ``every=Tumbling(S)`` or ``Sliding(...)`` (``clock=EventTime(...)`` for
    event time, ``limit`` to stop after N tables). See :class:`CountBy` for
    order and bounds and :class:`~flowtrace.operators.Window` for timing and
    end of stream.
    """
    table = CountBy(by, top=top, max_keys=max_keys)
    return Window(table, every=every, clock=clock, limit=limit, name=name or "count")
