"""Printing events to the terminal, in the tutorial's aligned columns."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TextIO, TypeVar

from flowtrace.context import StageContext
from flowtrace.stages import Sink

__all__ = ["Column", "ConsoleSink", "RelativeSeconds"]

T = TypeVar("T")


@dataclass(frozen=True)
class Column(Generic[T]):
    """One output column: its title, how to get its value, its width and format.

    A cell is ``format(value(event), spec)`` left-aligned in ``width``
    characters; the last column is never padded.
    """

    title: str
    value: Callable[[T], Any]
    width: int = 0
    spec: str = ""


class RelativeSeconds:
    """Seconds since the first event's nanosecond timestamp ``field``."""

    def __init__(self, field: str = "ts") -> None:
        self.field = field
        self._first: int | None = None

    def __call__(self, event: Any) -> float:
        ts: int = getattr(event, self.field)
        if self._first is None:
            self._first = ts
        return (ts - self._first) / 1e9


class ConsoleSink(Sink[T], Generic[T]):
    """Writes one line per event to ``stream`` (stdout by default).

    ``header`` lines are printed when the sink opens; with ``columns``, a row
    of column titles follows. Each batch is written with one call and flushed,
    so output appears as soon as events arrive. Holds nothing between batches.
    """

    def __init__(
        self,
        columns: Sequence[Column[T]] = (),
        *,
        line: Callable[[T], str] | None = None,
        header: str | Sequence[str] = (),
        stream: TextIO | None = None,
        name: str = "console",
    ) -> None:
        if not columns and line is None:
            raise ValueError("ConsoleSink needs columns or a line function")
        self.columns = tuple(columns)
        self.line = line or self._row
        self.header = [header] if isinstance(header, str) else list(header)
        self.stream = stream
        self.name = name

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _row(self, event: T) -> str:
        return self._join([format(c.value(event), c.spec) for c in self.columns])

    def _join(self, cells: list[str]) -> str:
        widths = [c.width for c in self.columns[:-1]]
        padded = [f"{cell:<{w}}" for cell, w in zip(cells, widths, strict=False)]
        return " ".join([*padded, cells[-1]])

    def title_row(self) -> str:
        return self._join([c.title for c in self.columns])

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        lines = list(self.header)
        if self.columns:
            lines.append(self.title_row())
        if lines:
            self._out().write("\n".join(lines) + "\n")
            self._out().flush()

    async def write(self, batch: list[T]) -> None:
        out = self._out()
        out.write("".join(self.line(e) + "\n" for e in batch))
        out.flush()
