"""Merging results from many hosts: ``merge_by(window=Tumbling(10))``.

Agents ship their windowed results (histograms, count tables, window
aggregates) with wall-clock window bounds and their host; a collector adds
up the ones that cover the same wall-clock window.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..records import (
    Bucket,
    CountRow,
    CountTable,
    Histogram,
    LateEvent,
    Receipt,
    Record,
    Result,
    SideRecord,
    WindowResult,
)
from ..stages import Operator
from ._fields import positive, positive_int
from .buckets import log2_bounds
from .windowing import Tumbling

__all__ = ["MergeBy", "merge_by"]

_MERGES: dict[str, Callable[[list[Any]], Any]] = {
    "count": sum,
    "sum": sum,
    "rate": sum,
    "min": min,
    "max": max,
}


def _frozen(key: dict[str, Any] | None) -> Hashable:
    return None if key is None else tuple(sorted(key.items()))  # keys are unique


@dataclass
class _Group:
    """One kind of result in one fleet window: what has been added so far."""

    first: Result  # the first input: type, field, unit, key
    first_epoch: int
    hosts: set[str] = field(default_factory=set)
    inputs: list[str] = field(default_factory=list)
    seen: set[tuple[Any, ...]] = field(default_factory=set)  # (hosts, wall_start, wall_end)
    buckets: dict[str, Counter[tuple[int, int]]] = field(default_factory=dict)  # host -> buckets
    rows: Counter[Hashable] = field(default_factory=Counter)
    keys: dict[Hashable, dict[str, Any]] = field(default_factory=dict)
    others: int = 0
    values: list[Any] = field(default_factory=list)


class MergeBy(Operator[Any, Any]):
    """Adds up results of many hosts that cover the same wall-clock window.

    Input: :class:`~flowtrace.records.Result` records with wall-clock bounds
    (what the NATS sink ships and :func:`~flowtrace.sources.nats.nats_source`
    reads). A result belongs to the fleet window ``[k*L, (k+1)*L)``
    (``L = window.length``, Unix seconds) that holds the middle of its own
    window, so agents' windows of the same length fall one per fleet window
    whatever their phase, and shorter ones add up. Results without wall
    bounds (whole-run results) merge into one window emitted at the end.
    Results merge when they are of the same type and describe the same
    thing: histogram field, unit, scale and key; count table key fields;
    window aggregate, field and key.

    How: log2 and linear histograms add bucket by bucket (log2 buckets are
    listed from the lowest to the highest non-empty, as bcc prints them);
    count tables add by key, rows highest first, then cut to ``top`` rows
    (``others`` counts the rest, plus what agents had cut); window results
    add (``count``, ``sum``, ``rate``), take the ``min`` or ``max``, or
    concatenate (``collect``); other aggregates pass through unmerged. The
    merged record has the fleet window's bounds (as ``window_start``/
    ``window_end`` and ``wall_start``/``wall_end``), the results it adds up
    in ``inputs`` (``HOST@WALL_START``, sorted) and, with ``"host"`` in
    ``keep``, the sorted set of hosts in ``hosts``. With ``worst=N``, each
    merged histogram is followed by a ``WindowResult`` (aggregate
    ``"worst_hosts"``) listing the N hosts with the highest 99th percentile
    (``p99``: the upper bound of the bucket it falls in; ties: more
    events first), each as ``{"host", "p99", "count"}``.

    When: a fleet window is emitted once every host seen so far has sent a
    result ending ``lateness`` seconds or more after the window's end (room
    for results that arrive out of order, as resends after a failure do),
    or once the most advanced host is ``max_wait`` seconds past it (a host
    that stopped sending holds nothing back longer); the end of stream
    emits the rest, oldest first. Time here is the results' own wall-clock
    bounds, never the collector's clock, so a collector catching up on a
    backlog merges exactly as a live one.
    A result for a window already emitted is late: counted as dropped
    (``late``) and passed on as a :class:`~flowtrace.records.LateEvent`. The
    same result twice (same hosts, same wall bounds, same kind) is counted
    as dropped (``duplicate``) and left out. Other records, side records
    among them, pass through unchanged, ahead of what their batch completes.
    Errors: bad arguments raise
    :class:`~flowtrace.errors.PipelineDefinitionError` in one line.

    Bounds: at most ``max_groups`` open (kind, window) groups; results of
    further groups are dropped (``group_limit``).

    Receipts: a receipt is held until every window holding results that
    came before it has been emitted, then sent on behind them, so a durable
    source acknowledges a result only once its merged window reached the
    sink (see :mod:`flowtrace.routing`).
    """

    accepts_side_records = True

    def __init__(
        self,
        window: Tumbling | float = Tumbling(10.0),
        *,
        keep: Sequence[str] = ("host",),
        lateness: float | None = None,
        max_wait: float = 60.0,
        top: int | None = None,
        worst: int | None = None,
        max_groups: int = 10_000,
        name: str = "",
    ) -> None:
        self.name = name or "merge_by"
        length = window.length if isinstance(window, Tumbling) else window
        positive(length, f"{self.name}: window", allow_none=False)
        lateness = float(length) if lateness is None else lateness
        for what, value in (("lateness", lateness), ("max_wait", max_wait)):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not 0 <= value < math.inf:
                raise PipelineDefinitionError(
                    f"{self.name}: {what} must be >= 0 and finite, got {value!r}"
                )
        unknown = set(keep) - {"host"}
        if unknown:
            raise PipelineDefinitionError(
                f"{self.name}: keep={tuple(keep)!r}: only 'host' can be kept"
            )
        self.length = float(length)
        self.keep = tuple(keep)
        self.lateness = float(lateness)
        self.max_wait = float(max_wait)
        self.top = positive_int(top, f"{self.name}: top") if top is not None else None
        self.worst = positive_int(worst, f"{self.name}: worst") if worst is not None else None
        self.max_groups = positive_int(max_groups, f"{self.name}: max_groups")

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._groups: dict[tuple[Hashable, int | None], _Group] = {}
        self._progress: dict[str, float] = {}  # host -> latest wall_end it sent
        self._emitted_through: int | None = None  # highest fleet window emitted
        self._epoch = 0  # receipts seen
        self._receipts: list[tuple[int, Receipt]] = []  # (its number, receipt) held

    def output_type(self, input_type: type[Any] | None) -> type[Any] | None:
        return None

    def process(self, batch: list[Any]) -> Sequence[Any]:
        out: list[Any] = []
        receipt = None
        if batch and type(batch[-1]) is Receipt:
            batch, receipt = batch[:-1], batch[-1]
        for item in batch:
            if isinstance(item, Result) and not isinstance(item, SideRecord):
                out.extend(self._add(item))
            else:
                out.append(item)
        out.extend(self._due())
        if receipt is not None:
            self._epoch += 1
            self._receipts.append((self._epoch, receipt))
        out.extend(self._released())
        return out

    def finish(self) -> Sequence[Any]:
        out = [r for key in sorted(self._groups, key=_window_order) for r in self._emit(key)]
        self._groups.clear()
        return [*out, *self._released()]

    def _window_of(self, item: Result) -> int | None:
        if item.wall_start is None or item.wall_end is None:
            return None
        middle = (item.wall_start.timestamp() + item.wall_end.timestamp()) / 2
        return math.floor(middle / self.length)

    def _add(self, item: Result) -> list[Any]:
        q = self._window_of(item)
        hosts = tuple(sorted(item.hosts or ()))
        if item.wall_end is not None:
            for host in hosts:
                sent = item.wall_end.timestamp()
                self._progress[host] = max(self._progress.get(host, -math.inf), sent)
        if q is not None and self._emitted_through is not None and q <= self._emitted_through:
            self.ctx.stats.drop("late", 1)
            start, end = q * self.length, (q + 1) * self.length
            watermark = min(self._progress.values(), default=end)
            late = LateEvent(event=item, watermark=watermark, window_start=start, window_end=end)
            return [late]
        key = (_identity(item), q)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.max_groups:
                self.ctx.stats.drop("group_limit", 1)
                return []
            group = self._groups[key] = _Group(item, self._epoch)
        seen = (hosts, item.wall_start, item.wall_end)
        if seen in group.seen:
            self.ctx.stats.drop("duplicate", 1)
            return []
        group.seen.add(seen)
        group.hosts.update(hosts)
        when = item.wall_start.isoformat() if item.wall_start is not None else "None"
        group.inputs.append(f"{'+'.join(hosts)}@{when}")
        _fold(group, item, "+".join(hosts))
        return []

    def _due(self) -> list[Any]:
        """Emit the fleet windows every host (or the lateness bound) has passed."""
        if not self._progress:
            return []
        progress = self._progress.values()
        passed = max(min(progress) - self.lateness, max(progress) - self.max_wait)
        due = [k for k in self._groups if k[1] is not None and (k[1] + 1) * self.length <= passed]
        if not due:
            return []
        out = [r for key in sorted(due, key=_window_order) for r in self._emit(key)]
        for key in due:
            del self._groups[key]
        return out

    def _emit(self, key: tuple[Hashable, int | None]) -> list[Record]:
        group = self._groups[key]
        q = key[1]
        if q is not None and (self._emitted_through is None or q > self._emitted_through):
            self._emitted_through = q
        start = q * self.length if q is not None else None
        end = (q + 1) * self.length if q is not None else None
        hosts = sorted(group.hosts) if "host" in self.keep else None
        bounds: dict[str, Any] = {
            "window_start": start,
            "window_end": end,
            "wall_start": _utc(start),
            "wall_end": _utc(end),
            "hosts": hosts,
            "inputs": sorted(group.inputs),
        }
        first = group.first
        if isinstance(first, Histogram):
            total: Counter[tuple[int, int]] = Counter()
            for per_host in group.buckets.values():
                total.update(per_host)
            merged = Histogram(
                field=first.field,
                unit=first.unit,
                scale=first.scale,
                key=first.key,
                buckets=_bucket_list(total, first.scale),
                **bounds,
            )
            if self.worst is None:
                return [merged]
            ranked = sorted(
                ((_p99(b), sum(b.values()), h) for h, b in group.buckets.items()),
                key=lambda t: (-t[0], -t[1], t[2]),
            )[: self.worst]
            worst = WindowResult(
                aggregate="worst_hosts",
                field=first.field,
                key=first.key,
                value=[{"host": h, "p99": p, "count": n} for p, n, h in ranked],
                **bounds,
            )
            return [merged, worst]
        if isinstance(first, CountTable):
            ranked_rows = sorted(group.rows.items(), key=lambda kv: -kv[1])
            others = group.others
            if self.top is not None and len(ranked_rows) > self.top:
                others += sum(n for _, n in ranked_rows[self.top :])
                ranked_rows = ranked_rows[: self.top]
            rows = [CountRow(group.keys[k], n) for k, n in ranked_rows]
            return [CountTable(rows=rows, others=others, key_fields=first.key_fields, **bounds)]
        assert isinstance(first, WindowResult)
        merge = _MERGES.get(first.aggregate)
        if merge is not None:
            value = merge(group.values)
        elif first.aggregate == "collect":
            value = [v for values in group.values for v in values]
        else:
            return [first]
        return [
            WindowResult(
                aggregate=first.aggregate, value=value, key=first.key, field=first.field, **bounds
            )
        ]

    def _released(self) -> list[Receipt]:
        """The latest held receipt all of whose results were emitted."""
        oldest = min((g.first_epoch for g in self._groups.values()), default=self._epoch)
        ready = [r for r in self._receipts if r[0] <= oldest]
        if not ready:
            return []
        self._receipts = [r for r in self._receipts if r[0] > oldest]
        return [ready[-1][1]]


def _identity(item: Result) -> Hashable:
    if isinstance(item, Histogram):
        return ("histogram", item.field, item.unit, item.scale, _frozen(item.key))
    if isinstance(item, CountTable):
        return ("count_table", tuple(item.key_fields))
    assert isinstance(item, WindowResult)  # the third and last kind of Result
    return ("window", item.aggregate, item.field, _frozen(item.key))


def _fold(group: _Group, item: Result, host: str) -> None:
    if isinstance(item, Histogram):
        buckets = group.buckets.setdefault(host, Counter())
        for b in item.buckets:
            if b.count:
                buckets[(b.low, b.high)] += b.count
    elif isinstance(item, CountTable):
        for row in item.rows:
            k = _frozen(row.key)
            group.keys.setdefault(k, row.key)
            group.rows[k] += row.count
        group.others += item.others
    elif isinstance(item, WindowResult):
        group.values.append(item.value)


def _bucket_list(total: Counter[tuple[int, int]], scale: str) -> list[Bucket]:
    used = [b for b, n in total.items() if n]
    if not used:
        return []
    if scale == "log2":
        slots = [high.bit_length() or 1 for _, high in used]
        return [
            Bucket(*log2_bounds(s), total.get(log2_bounds(s), 0))
            for s in range(min(slots), max(slots) + 1)
        ]
    if scale == "linear":
        low, high = min(b[0] for b in used), max(b[1] for b in used)
        return [Bucket(v, v, total.get((v, v), 0)) for v in range(low, high + 1)]
    return [Bucket(lo, hi, total[(lo, hi)]) for lo, hi in sorted(used)]


def _p99(buckets: Counter[tuple[int, int]]) -> int:
    """The upper bound of the bucket holding the 99th percentile."""
    total = sum(buckets.values())
    need = math.ceil(total * 0.99)
    seen = 0
    for (_, high), n in sorted(buckets.items()):
        seen += n
        if seen >= need:
            return high
    return 0


def _window_order(key: tuple[Hashable, int | None]) -> tuple[bool, int]:
    return (key[1] is None, key[1] or 0)


def merge_by(
    window: Tumbling | float = Tumbling(10.0),
    *,
    keep: Sequence[str] = ("host",),
    lateness: float | None = None,
    max_wait: float = 60.0,
    top: int | None = None,
    worst: int | None = None,
    max_groups: int = 10_000,
    name: str = "",
) -> MergeBy:
    """Merge results of many hosts per wall-clock ``window`` (a
    :class:`~flowtrace.operators.Tumbling` or seconds), keeping the host
    set: ``nats_source(...) | merge_by(window=Tumbling(10), worst=3)``.
    ``lateness`` defaults to one window. See
    :class:`MergeBy` for how each result type adds up, when a window is
    emitted, and the bounds."""
    return MergeBy(
        window,
        keep=keep,
        lateness=lateness,
        max_wait=max_wait,
        top=top,
        worst=worst,
        max_groups=max_groups,
        name=name,
    )


def _utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)
