"""What the flowtrace contenders share: a sink keeping the final result, and
the answers they report in the same shape as the other contenders'."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from flowtrace import Sink
from flowtrace.records import CountTable, Histogram

__all__ = ["Result", "count_answer", "hist_answer"]

T = TypeVar("T")


class Result(Sink[T], Generic[T]):
    """Keeps the last item it receives (an operator's final table), where
    the object the caller holds sees it: each run works on a copy of the
    sink, and the copies share one holder."""

    def __init__(self, name: str = "result") -> None:
        self._last: list[T] = []
        self.name = name

    @property
    def value(self) -> T | None:
        return self._last[-1] if self._last else None

    async def write(self, batch: list[T]) -> None:
        self._last[:] = batch[-1:]


def count_answer(value: Any) -> dict[str, int]:
    """A final count table as ``{comm: count}``."""
    if not isinstance(value, CountTable):
        return {}
    return {str(row.key["comm"]): int(row.count) for row in value.rows}


def hist_answer(value: Any) -> dict[str, int]:
    """A final histogram as ``{"low-high": count}``, non-empty buckets only."""
    if not isinstance(value, Histogram):
        return {}
    return {f"{b.low}-{b.high}": int(b.count) for b in value.buckets if b.count}
