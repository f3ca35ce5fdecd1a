"""Printing to the terminal: events in the tutorial's aligned columns,
histograms exactly as bcc prints them, count tables as aligned rows."""

from __future__ import annotations

import copy
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TextIO, TypeVar, cast, runtime_checkable

from flowtrace.context import StageContext
from flowtrace.linefile import is_pipe, write_to_pipe
from flowtrace.records import CountRow, CountTable, EmptyWindows, Histogram, Record, SideRecord
from flowtrace.render import (
    ColumnWidths,
    count_table_lines,
    histogram_lines,
    ordered_rows,
    section_line,
)
from flowtrace.stages import Sink
from flowtrace.visible import visible_line

__all__ = [
    "Column",
    "ConsoleSink",
    "EachRun",
    "HistogramStyle",
    "RelativeSeconds",
    "TableStyle",
    "empty_windows_line",
]

T = TypeVar("T")
F = TypeVar("F")


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


@runtime_checkable
class PerRun(Protocol):
    """A formatting callable that keeps state across the events of a run and
    makes a fresh copy of itself for each run."""

    def fresh(self) -> Any: ...


def _fresh(value: F) -> F:
    return cast(F, value.fresh()) if isinstance(value, PerRun) else value


class EachRun(Generic[T]):
    """A line or column value made anew for each run by calling ``make()``.

    For formatting whose state is not one :class:`RelativeSeconds` but lives
    in a function's closure: ``make`` returns the formatting function, each
    run calls it once and formats every event of the run with the result.
    """

    def __init__(self, make: Callable[[], Callable[[T], Any]]) -> None:
        self.make = make
        self._made = make()

    def fresh(self) -> EachRun[T]:
        return EachRun(self.make)

    def __call__(self, event: T) -> Any:
        return self._made(event)


class RelativeSeconds:
    """Seconds since the first event's nanosecond timestamp ``field`` (of
    the run: each run starts afresh)."""

    def __init__(self, field: str = "ts") -> None:
        self.field = field
        self._first: int | None = None

    def fresh(self) -> RelativeSeconds:
        return RelativeSeconds(self.field)

    def __call__(self, event: Any) -> float:
        ts: int = getattr(event, self.field)
        if self._first is None:
            self._first = ts
        return (ts - self._first) / 1e9


@dataclass(frozen=True)
class HistogramStyle:
    """How :class:`~flowtrace.records.Histogram` records print.

    The histogram itself is exactly bcc's ``print_log2_hist(unit)`` /
    ``print_linear_hist(unit)`` output. ``blank_line`` prints an empty line
    before each one (bitehist and vfsreadlat call ``print()`` first). A
    per-key histogram is preceded, as in bcc, by an empty line and
    ``{section_header} = {key!r}`` (``section_header`` defaults to the key's
    field names; ``section`` formats the key mapping yourself).
    ``timestamp`` prints the local wall-clock time the histogram's window
    ended (``%H:%M:%S``) above it, as bcc tools do with ``-T``.
    """

    blank_line: bool = True
    strip_leading_zero: bool = False
    section_header: str | None = None
    section: Callable[[dict[str, Any]], str] | None = None
    timestamp: bool = False

    def lines(self, hist: Histogram) -> list[str]:
        lines = [""] if self.blank_line and hist.key is None else []
        if self.timestamp and hist.wall_end is not None:
            lines.append(hist.wall_end.astimezone().strftime("%H:%M:%S"))
        if hist.key is not None:
            if self.section is not None:
                lines += ["", self.section(hist.key)]
            else:
                lines += ["", section_line(hist.key, self.section_header)]
        return lines + histogram_lines(hist, self.strip_leading_zero)


@dataclass(frozen=True)
class TableStyle:
    """How :class:`~flowtrace.records.CountTable` records print.

    By default: aligned columns (key fields, then COUNT) under a title row,
    highest count first. ``line`` formats each row yourself (strlen_count:
    ``'%10d "%s"' % (r.count, r.key["s"])``); ``title`` replaces the title
    row (with ``line``, no title row is printed unless given). ``ascending``
    prints the lowest count first (ties in order of first appearance), as
    bcc's tools that sort by value do. ``timestamp`` prints the local
    wall-clock time the table's window ended (``%H:%M:%S``) above it. The
    console sink keeps each column as wide as it has been in the run.
    """

    line: Callable[[CountRow], str] | None = None
    title: str | None = None
    ascending: bool = False
    blank_line: bool = False
    timestamp: bool = False

    def lines(self, table: CountTable, widths: ColumnWidths | None = None) -> list[str]:
        """The table's lines; with ``widths``, columns keep the widths
        earlier tables had (:class:`~flowtrace.render.ColumnWidths`)."""
        lines = [""] if self.blank_line else []
        if self.timestamp and table.wall_end is not None:
            lines.append(table.wall_end.astimezone().strftime("%H:%M:%S"))
        if self.line is None:
            body = count_table_lines(
                table, ascending=self.ascending, title=self.title is None, widths=widths
            )
            return lines + (self.title.split("\n") if self.title is not None else []) + body
        rows = ordered_rows(table, ascending=self.ascending)
        if self.title is not None:
            lines += self.title.split("\n")  # the title's own line ends, not an event's
        lines += [self.line(row) for row in rows]
        if table.others:
            lines.append(f"(others: {table.others})")
        return lines


class ConsoleSink(Sink[T], Generic[T]):
    """Writes lines to ``stream`` (stdout by default).

    ``header`` lines are printed when the sink opens; with ``columns``, a row
    of column titles follows. Events print one line each, through ``line``
    or ``columns``. Result records print by their type: histograms as bcc
    does (``histogram`` style), count tables as aligned rows (``table``
    style); a run of empty windows said at once
    (:class:`~flowtrace.records.EmptyWindows`) as one line
    (:func:`empty_windows_line`); other side records (late events,
    incomplete joins) as one ``kind: field=value ...`` line each; other
    records (window results, join pairs) through ``line``/``columns`` when
    given, else as such a line.
    Each batch is written with one call and flushed, so output appears as
    soon as it arrives; to a pipe or terminal (standard output), without
    blocking the event loop while its reader is not reading, so a stop is
    not held by it. When a write fails (a closed pipe, a full disk), the
    items of the batch not printed whole are counted as dropped
    (``write_error``; to a pipe the bytes it took are known, elsewhere the
    whole batch counts) and the error raised.
    Holds no results between batches, only the widths its count tables'
    columns have had (one list per set of column titles),
    so columns stay put from one interval to the next. An event it cannot
    print (no ``line`` or ``columns``) fails the stage with a message saying
    to pass one.
    """

    def __init__(
        self,
        columns: Sequence[Column[T]] = (),
        *,
        line: Callable[[T], str] | None = None,
        header: str | Sequence[str] = (),
        histogram: HistogramStyle | None = None,
        table: TableStyle | None = None,
        stream: TextIO | None = None,
        name: str = "console",
    ) -> None:
        self.columns = tuple(columns)
        self.line = line or (self._row if columns else None)
        self.header = [header] if isinstance(header, str) else list(header)
        self.histogram = histogram or HistogramStyle()
        self.table = table or TableStyle()
        self.stream = stream
        self.name = name

    def fresh(self) -> ConsoleSink[T]:
        """A copy for one run. Formatting callables that keep state across
        events say so with a ``fresh()`` method of their own
        (:class:`RelativeSeconds`: the first timestamp), and the run gets
        their fresh copies; other callables are shared."""
        sink = copy.copy(self)
        sink.columns = tuple(replace(c, value=_fresh(c.value)) for c in self.columns)
        own_line = self.line is not None and self.line != self._row
        sink.line = _fresh(self.line) if own_line else (sink._row if self.columns else None)
        return sink

    def prints_text(self) -> bool:
        """True when it writes to standard output (no ``stream`` given)."""
        return self.stream is None

    def results_only(self) -> ConsoleSink[T]:
        """A copy without the header lines (column titles stay: they label
        the results)."""
        quiet = copy.copy(self)
        quiet.header = []
        if self.line == self._row:
            quiet.line = quiet._row
        return quiet

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
        self._widths = ColumnWidths()
        self._pipe = self.stream is None and _is_pipe(sys.stdout)
        lines = list(self.header)
        if self.columns:
            lines.append(self.title_row())
        if lines:
            self._out().write("\n".join(lines) + "\n")
            self._out().flush()

    def lines(self, item: T) -> list[str]:
        """The lines printed for one item."""
        if isinstance(item, Histogram):
            return self.histogram.lines(item)
        if isinstance(item, CountTable):
            return self.table.lines(item, getattr(self, "_widths", None))
        if isinstance(item, EmptyWindows):
            return [empty_windows_line(item)]
        if isinstance(item, SideRecord):
            return [_record_line(item)]
        if self.line is not None:
            return [self.line(item)]
        if isinstance(item, Record):
            return [_record_line(item)]
        raise ValueError(
            f"ConsoleSink cannot print a {type(item).__name__}: pass columns=... or line=..."
        )

    async def write(self, batch: list[T]) -> None:
        out = self._out()
        line = self.line
        if line is not None and not any(isinstance(e, _SPECIAL) for e in batch):
            texts = [visible_line(line(e)) + "\n" for e in batch]
        else:
            texts = ["".join(visible_line(t) + "\n" for t in self.lines(i)) for i in batch]
        text = "".join(texts)
        encoding, errors = out.encoding, out.errors or "strict"
        written = 0

        def wrote(n: int) -> None:
            nonlocal written
            written += n

        try:
            if self._pipe:  # a reader that stops reading must not hold the event loop
                out.flush()
                await write_to_pipe(out.fileno(), text.encode(encoding, errors), wrote)
            else:
                out.write(text)
                out.flush()
        except OSError:  # a closed pipe, a full disk: what was not printed whole
            printed = _whole(texts, written, encoding, errors)
            self.ctx.stats.drop("write_error", len(batch) - printed)
            raise


def _whole(texts: list[str], written: int, encoding: str, errors: str) -> int:
    """How many of ``texts`` lie wholly within the first ``written`` bytes."""
    end = 0
    for n, text in enumerate(texts):
        end += len(text.encode(encoding, errors))
        if end > written:
            return n
    return len(texts)


_SPECIAL = (Histogram, CountTable, SideRecord)


def _is_pipe(stream: TextIO) -> bool:
    try:
        return is_pipe(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor (a test's stream)
        return False


def empty_windows_line(record: EmptyWindows) -> str:
    """``(3999 empty windows of 1 s from 2026-11-29 10:00:01 to 11:06:40 UTC)``:
    wall-clock bounds when the record has them, else the clock's seconds."""
    what = f"({record.windows} empty windows of {record.step:g} s"
    if record.wall_start is not None and record.wall_end is not None:
        first, last = record.wall_start, record.wall_end
        end = last.strftime("%H:%M:%S" if last.date() == first.date() else "%Y-%m-%d %H:%M:%S")
        return f"{what} from {first.strftime('%Y-%m-%d %H:%M:%S')} to {end} UTC)"
    return f"{what} from {record.window_start:.9g} s to {record.window_end:.9g} s)"


def _record_line(record: Record) -> str:
    fields = [f for f in record.__struct_fields__ if getattr(record, f) is not None]
    return f"{record.kind}: " + " ".join(f"{f}={getattr(record, f)!r}" for f in fields)
