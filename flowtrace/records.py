"""Result records operators emit: histograms, count tables, window results.

Like events, they are ``msgspec.Struct`` types, so every sink can encode
them; ``kind`` names the record type in NDJSON output and lets sinks (the
metrics sink, the console) recognise them. Multi-field keys stay structured:
a key is a mapping from field name to value, never a joined string.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = ["Bucket", "CountRow", "CountTable", "Histogram", "Record", "WindowResult"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of operator results; ``window_start``/``window_end`` are clock
    seconds of the window the result covers (None when not windowed)."""

    kind: ClassVar[str] = "record"
    window_start: float | None = None
    window_end: float | None = None


class Bucket(msgspec.Struct, frozen=True):
    """Values ``low <= v <= high`` were seen ``count`` times."""

    low: int
    high: int
    count: int


class Histogram(Record, frozen=True, kw_only=True):
    """A log2 or linear histogram of one field.

    ``buckets`` run from the lowest to the highest non-empty bucket, with the
    empty ones between; ``unit`` is the value unit printed as bcc's
    ``val_type`` ("kbytes", "usecs"); ``key`` holds the grouping fields'
    values for per-key histograms.
    """

    kind: ClassVar[str] = "histogram"
    field: str
    unit: str
    scale: str  # "log2" or "linear"
    buckets: list[Bucket]
    key: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return sum(b.count for b in self.buckets)


class CountRow(msgspec.Struct, frozen=True):
    """One key (field name -> value) and how often it was seen."""

    key: dict[str, Any]
    count: int


class CountTable(Record, frozen=True, kw_only=True):
    """Counts by key, highest first; ``others`` counts events whose keys were
    cut by a top-N limit."""

    kind: ClassVar[str] = "count_table"
    rows: list[CountRow]
    others: int = 0


class WindowResult(Record, frozen=True, kw_only=True):
    """A scalar aggregate (count, sum, min, max) or collected events of one window."""

    kind: ClassVar[str] = "window"
    aggregate: str
    value: Any
    key: dict[str, Any] | None = None
