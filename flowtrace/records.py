"""Result records operators emit: histograms, count tables, window results,
join pairs and side records; and receipts, which tell a source how far its
records have reached the sink.

Like events, they are ``msgspec.Struct`` types, so every sink can encode
them; ``kind`` names the record type in NDJSON output and lets sinks (the
metrics sink, the console) recognise them. Multi-field keys stay structured:
a key is a mapping from field name to value, never a joined string.

The per-event records (join pairs, incomplete joins, late events) hold only
a key of plain values and events; they are frozen and nothing they refer to
refers back to them, so they can never be part of a reference cycle, hence
``gc=False`` (the collector never rescans them: a join emits one per
request, and tracking them tripled its cost).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

__all__ = [
    "Bucket",
    "CountRow",
    "CountTable",
    "EmptyWindows",
    "Histogram",
    "JoinIncomplete",
    "JoinPair",
    "LateEvent",
    "Receipt",
    "Record",
    "Result",
    "SideRecord",
    "WindowResult",
]

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of operator results; ``window_start``/``window_end`` are clock
    seconds of the window the result covers (monotonic: the clock of
    ``bpf_ktime_get_ns()``; None when not windowed), ``wall_start``/
    ``wall_end`` the same bounds in wall-clock time (UTC; ISO 8601 in
    NDJSON), set by the window operators from the run's clock."""

    kind: ClassVar[str] = "record"
    window_start: float | None = None
    window_end: float | None = None
    wall_start: datetime | None = None
    wall_end: datetime | None = None


class Result(Record, frozen=True, kw_only=True):
    """Base of the mergeable results (histograms, count tables, window
    results): what can cross hosts and be added up with the same result of
    other hosts (see :func:`flowtrace.operators.merge_by`).

    Its ``wall_start``/``wall_end`` (UTC) are set at latest when the result
    leaves its host (the NATS sink sets them from the run's clock, see
    :func:`flowtrace.clock.wall_datetime`), so hosts whose monotonic clocks
    differ agree on when a window was.
    ``hosts`` names the hosts whose events the result counts: one host for
    a result an agent sent, every contributing host for a merged one. All
    three are None for a result that never left its host. A merged result
    lists in ``inputs`` the results it adds up, each as
    ``HOST@WALL_START``: a reader of several collector runs' output sees a
    window written again after a collector died between writing it and
    acknowledging its inputs (the same inputs twice) and keeps one.
    """

    hosts: list[str] | None = None
    inputs: list[str] | None = None


class Bucket(msgspec.Struct, frozen=True):
    """Values ``low <= v <= high`` were seen ``count`` times."""

    low: int
    high: int
    count: int


class Histogram(Result, frozen=True, kw_only=True):
    """A log2 or linear histogram of one field.

    ``buckets`` run from the lowest to the highest non-empty bucket, with the
    empty ones between; ``unit`` is the value unit printed as bcc's
    ``val_type`` ("kbytes", "usecs"); ``key`` holds the grouping fields'
    values for per-key histograms; ``sum`` is the sum of the values
    counted, in ``unit`` (see :class:`~flowtrace.operators.Log2` and
    :class:`~flowtrace.operators.Linear`), None when not known.
    """

    kind: ClassVar[str] = "histogram"
    field: str
    unit: str
    scale: str  # "log2" or "linear"
    buckets: list[Bucket]
    key: dict[str, Any] | None = None
    sum: float | None = None

    @property
    def total(self) -> int:
        return sum(b.count for b in self.buckets)


class CountRow(msgspec.Struct, frozen=True):
    """One key (field name -> value) and how often it was seen."""

    key: dict[str, Any]
    count: int


class CountTable(Result, frozen=True, kw_only=True):
    """Counts by key, highest first; ``others`` counts events whose keys were
    cut by a top-N limit. ``key_fields`` names the key's fields (so an empty
    table still has column titles)."""

    kind: ClassVar[str] = "count_table"
    rows: list[CountRow]
    others: int = 0
    key_fields: list[str] = msgspec.field(default_factory=list)


class WindowResult(Result, frozen=True, kw_only=True):
    """A scalar aggregate (count, sum, min, max, rate) or collected events of
    one window; ``field`` names the aggregated field (None for count/rate)."""

    kind: ClassVar[str] = "window"
    aggregate: str
    value: Any
    key: dict[str, Any] | None = None
    field: str | None = None


class SideRecord(Record, frozen=True, kw_only=True):
    """Base of side outputs: what an operator could not fold into its results
    (a late event, a start that never completed) but passes on rather than
    lose. The runtime sends side records past every operator unchanged,
    ahead of the results of the batch they came with, so no predicate,
    function, key or aggregate is applied to one (see
    :mod:`flowtrace.routing`); sinks print or write them (see
    ``docs/operators.md``)."""

    kind: ClassVar[str] = "side"


class Receipt(SideRecord, frozen=True, kw_only=True, gc=False):
    """A mark a source puts after a batch: "everything I emitted before
    this". The runtime carries it behind the results of that batch, holds it
    in operators that keep state until they have emitted what the batch
    went into (see :mod:`flowtrace.routing`), takes it out before the sink
    and, once the sink has written everything ahead of it, records
    ``token`` in ``ctx.pipeline.receipts[source]``. A source that must
    acknowledge its input upstream (a durable NATS consumer) does so for
    the batches up to that token, and only then. Sinks never see receipts.
    """

    kind: ClassVar[str] = "receipt"
    source: str
    token: int


class EmptyWindows(SideRecord, frozen=True, kw_only=True):
    """``windows`` consecutive windows in which nothing arrived, said once
    instead of emitted one by one: a window operator sends it when more
    empty windows are due at once than it emits singly (the clock jumped: a
    replayed recording with a gap, a machine that slept; see
    :class:`~flowtrace.operators.Window`). ``window_start`` is the first
    one's start and ``window_end`` the last one's end; one window ends every
    ``step`` seconds. It stands for those windows: ``limit`` counts them."""

    kind: ClassVar[str] = "empty_windows"
    windows: int
    step: float


class LateEvent(SideRecord, Generic[E], frozen=True, kw_only=True, gc=False):
    """An event that arrived after every window it belongs to was emitted
    (event time beyond the allowed lateness). ``window_start``/``window_end``
    are those of the latest window it belonged to; ``watermark`` is the
    event-time watermark (seconds) when it arrived."""

    kind: ClassVar[str] = "late_event"
    event: E
    watermark: float


class JoinPair(Record, Generic[S, C], frozen=True, kw_only=True, gc=False):
    """A start event and the complete event with the same key.

    ``latency_ns`` is the complete's timestamp minus the start's (both in
    nanoseconds), or the difference of their arrival times when the join
    has no timestamp field.
    """

    kind: ClassVar[str] = "join_pair"
    key: dict[str, Any]
    start: S
    complete: C
    latency_ns: int


class JoinIncomplete(SideRecord, Generic[S], frozen=True, kw_only=True, gc=False):
    """A start event that got no complete event.

    ``reason`` is ``"timeout"`` (pending longer than the join's timeout),
    ``"replaced"`` (a later start with the same key took its place),
    ``"repeated"`` (it came while a start with its key was pending, and the
    join keeps the first) or ``"end_of_stream"`` (still pending when the
    stream ended); ``waited`` is how long it was pending, in seconds of the
    pipeline clock.
    """

    kind: ClassVar[str] = "join_incomplete"
    key: dict[str, Any]
    start: S
    reason: str
    waited: float
