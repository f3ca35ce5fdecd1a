"""Text for result records: histograms exactly as bcc prints them, count
tables as aligned rows.

:func:`log2_lines` and :func:`linear_lines` produce, line for line, what
bcc's ``print_log2_hist(val_type)`` and ``print_linear_hist(val_type)`` print
for the same slot counts: the header (a wider layout when slots above 32 are
used), the ``low -> high : count |stars|`` rows, the 40-character star bar
(20 in the wide layout) scaled to the largest count, rows from slot 1 (log2)
or 0 (linear) up to the highest non-empty slot, and optionally without the
leading empty rows (``strip_leading_zero``). Nothing at all is printed for
an empty histogram, as in bcc.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .operators.buckets import LOG2_SLOTS, log2_bounds
from .records import CountRow, CountTable, Histogram

__all__ = [
    "ColumnWidths",
    "count_table_lines",
    "histogram_counts",
    "histogram_lines",
    "linear_lines",
    "log2_lines",
    "ordered_rows",
    "section_line",
]

_BAR = 40


def _bar(count: int, most: int, width: int) -> str:
    """``width`` stars for the largest count, proportionally fewer (rounded
    down, computed with the same float expression as bcc) for the rest."""
    limit = width * count / most - 1
    stars = 0 if limit < 0 else min(width, math.floor(limit) + 1)
    bar = "*" * stars
    return bar[:-1] + "+" if count > most else bar


def log2_lines(counts: Sequence[int], unit: str, strip_leading_zero: bool = False) -> list[str]:
    """bcc's ``print_log2_hist`` output for ``counts[slot]``, one string per line."""
    last = max((i for i, c in enumerate(counts) if c > 0), default=-1)
    most = max(counts, default=0)
    lines = []
    if last <= 32:
        width = _BAR
        if last > 0:
            lines.append(f"     {unit:<19} : count     distribution")
    else:
        width = _BAR // 2
        lines.append(f"               {unit:<29} : count     distribution")
    skipping = strip_leading_zero
    for slot in range(1, last + 1):
        count = counts[slot]
        if skipping and not count:
            continue
        skipping = False
        low, high = log2_bounds(slot)
        bar = _bar(count, most, width)
        if width == _BAR:
            lines.append(f"{low:>10} -> {high:<10} : {count:<8} |{bar:<{width}}|")
        else:
            lines.append(f"{low:>20} -> {high:<20} : {count:<8} |{bar:<{width}}|")
    return lines


def linear_lines(counts: Sequence[int], unit: str, strip_leading_zero: bool = False) -> list[str]:
    """bcc's ``print_linear_hist`` output for ``counts[slot]``, one string per line."""
    last = max((i for i, c in enumerate(counts) if c > 0), default=-1)
    most = max(counts, default=0)
    lines = [f"     {unit:<13} : count     distribution"] if last >= 0 else []
    skipping = strip_leading_zero
    for slot in range(last + 1):
        count = counts[slot]
        if skipping and not count:
            continue
        skipping = False
        lines.append(f"        {slot:<10} : {count:<8} |{_bar(count, most, _BAR):<{_BAR}}|")
    return lines


def histogram_counts(hist: Histogram) -> list[int]:
    """The slot counts of ``hist`` (index = bcc slot), as bcc's table holds them."""
    if hist.scale == "log2":
        counts = [0] * LOG2_SLOTS
        for b in hist.buckets:
            slot = b.high.bit_length()
            if not 1 <= slot < LOG2_SLOTS or log2_bounds(slot) != (b.low, b.high):
                raise ValueError(f"bucket {b.low}..{b.high} is not a log2 bucket")
            counts[slot] += b.count
        return counts
    if hist.scale == "linear":
        top = max((b.high for b in hist.buckets), default=-1)
        counts = [0] * (top + 1)
        for b in hist.buckets:
            if b.low != b.high or b.low < 0:
                raise ValueError(f"bucket {b.low}..{b.high} is not a linear slot")
            counts[b.low] += b.count
        return counts
    raise ValueError(f"histogram scale {hist.scale!r} is neither 'log2' nor 'linear'")


def histogram_lines(hist: Histogram, strip_leading_zero: bool = False) -> list[str]:
    """``hist`` as bcc prints it (see :func:`log2_lines`, :func:`linear_lines`)."""
    counts = histogram_counts(hist)
    if hist.scale == "log2":
        return log2_lines(counts, hist.unit, strip_leading_zero)
    return linear_lines(counts, hist.unit, strip_leading_zero)


def section_line(key: dict[str, Any], header: str | None = None) -> str:
    """The line bcc prints above each per-key histogram (``{header} = {key!r}``);
    ``header`` defaults to the key's field names."""
    values = tuple(key.values())
    shown = values[0] if len(values) == 1 else values
    return f"{header or ', '.join(key)} = {shown!r}"


class ColumnWidths:
    """How wide each column of a table has been so far, by the table's
    column titles: tables printed one after another (one per interval)
    keep their columns where they were; a column only ever widens. Holds
    one list of widths per set of titles."""

    def __init__(self) -> None:
        self._widths: dict[tuple[str, ...], list[int]] = {}

    def fit(self, titles: Sequence[str], widths: Sequence[int]) -> list[int]:
        """The widths to print with: ``widths``, widened to the widest seen."""
        seen = self._widths.get(tuple(titles))
        merged = list(widths) if seen is None else list(map(max, seen, widths))
        self._widths[tuple(titles)] = merged
        return merged


def count_table_lines(
    table: CountTable,
    *,
    ascending: bool = False,
    title: bool = True,
    widths: ColumnWidths | None = None,
) -> list[str]:
    """``table`` as aligned columns: the key fields (left-aligned), then COUNT
    (right-aligned), under a title row; rows highest count first (lowest
    first with ``ascending``, ties in order of first appearance either way);
    a last ``(others)`` row when top-N cut some. With ``widths``, columns are
    as wide as they have been in earlier tables too."""
    fields = list(table.key_fields) or sorted({f for row in table.rows for f in row.key})
    rows = ordered_rows(table, ascending=ascending)
    cells = [[_cell(row.key.get(f, "")) for f in fields] + [str(row.count)] for row in rows]
    if table.others:
        cells.append(["(others)"] + [""] * (len(fields) - 1) + [str(table.others)])
    titles = [f.upper() for f in fields] + ["COUNT"]
    grid = [titles, *cells] if title else cells
    needed = [max(len(r[i]) for r in [titles, *cells]) for i in range(len(titles))]
    used = needed if widths is None else widths.fit(titles, needed)
    return [_aligned(r, used) for r in grid]


def ordered_rows(table: CountTable, *, ascending: bool = False) -> list[CountRow]:
    """``table``'s rows in print order: highest count first (the table's own
    order), or lowest first with ``ascending``; ties in order of first
    appearance either way."""
    return sorted(table.rows, key=_count) if ascending else list(table.rows)


def _aligned(cells: list[str], widths: list[int]) -> str:
    keys = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
    return " ".join([*keys, cells[-1].rjust(widths[-1])])


def _count(row: CountRow) -> int:
    return row.count


def _cell(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
