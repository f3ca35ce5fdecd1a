"""``flowtrace run --live``: the latest results and the run's counters,
redrawn in place on the terminal, like ``top``.

:class:`LiveView` takes the place of the pipeline's console output (see
:func:`~flowtrace.output_mode.replace_text_sinks`). It keeps the latest
histogram per field and key, the latest count table per set of key fields
and the last lines of anything else, and draws them with the per-stage
counters (in, out, lost, dropped, late) and how the probes attached, twice
a second, with rich's ``Live`` display (in rich's refresh thread; the state
it draws is guarded by a lock). Every string it draws goes through
:func:`~flowtrace.visible.visible`, as the console sink's lines do: control
characters from events or a recording show as ``\\xNN``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .context import StageContext
from .expression import item_line
from .output_mode import replace_text_sinks
from .records import CountTable, Histogram, Record
from .render import ColumnWidths, count_table_lines, histogram_lines
from .stages import Pipeline, Sink
from .visible import visible

__all__ = ["LiveView", "with_live_view"]

REFRESH_PER_SECOND = 2
RECENT_LINES = 10
TABLE_ROWS = 20
MAX_RESULTS = 64


def with_live_view(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` drawing a live view instead of printing text."""
    return pipeline.replace(sink=replace_text_sinks(pipeline.sink, LiveView))


class LiveView(Sink[Any]):
    """Draws the latest results and the run's counters in place on standard
    output (a terminal).

    Holds the latest histogram per (field, unit, key), the latest count
    table per set of key fields (at most 64 results: the oldest are
    forgotten), and the last 10 lines of other items, formatted by
    ``text``'s ``lines()`` when the sink it replaces has one (the console
    sink). Count tables show their top 20 rows. Redrawn twice a second and
    once more at close, where the last frame stays on the screen.
    """

    name = "live"

    def __init__(self, text: Sink[Any] | None = None) -> None:
        self.text = text

    def fresh(self) -> LiveView:
        return LiveView(None if self.text is None else self.text.fresh())

    def reports_pipeline(self) -> bool:
        return True

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self._lock = threading.Lock()
        self._results: dict[tuple[Any, ...], Record] = {}
        self._recent: deque[str] = deque(maxlen=RECENT_LINES)
        self._widths = ColumnWidths()
        self._started = time.monotonic()
        self._console = Console(file=sys.stdout, highlight=False)
        self._live = Live(
            get_renderable=self._render,
            console=self._console,
            refresh_per_second=REFRESH_PER_SECOND,
            auto_refresh=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    async def write(self, batch: list[Any]) -> None:
        with self._lock:
            for item in batch:
                if isinstance(item, Histogram):
                    key = tuple(sorted((item.key or {}).items()))
                    self._keep(("histogram", item.field, item.unit, key), item)
                elif isinstance(item, CountTable):
                    self._keep(("table", tuple(item.key_fields)), item)
                else:
                    self._recent.extend(self._lines(item))

    def _keep(self, slot: tuple[Any, ...], record: Record) -> None:
        self._results.pop(slot, None)
        self._results[slot] = record
        while len(self._results) > MAX_RESULTS:
            del self._results[next(iter(self._results))]

    def _lines(self, item: Any) -> list[str]:
        lines = getattr(self.text, "lines", None)
        if callable(lines):
            try:
                return [str(line) for line in lines(item)]
            except Exception:  # a format for other items; fall back to fields
                pass
        return [item_line(item)]

    async def close(self) -> None:
        live = getattr(self, "_live", None)
        if live is not None:
            live.refresh()
            live.stop()

    def _render(self) -> RenderableType:
        with self._lock:
            results = list(self._results.values())
            recent = list(self._recent)
        stats = self.ctx.pipeline
        elapsed = time.monotonic() - self._started
        title = _text(
            f"flowtrace {stats.name or 'pipeline'}   {time.strftime('%H:%M:%S')}"
            f"   running {elapsed:.0f}s   lost {stats.lost}   dropped {stats.dropped}",
            style="bold",
        )
        counters = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("STAGE", "IN", "OUT", "LOST", "DROPPED", "LATE"):
            counters.add_column(column, justify="left" if column == "STAGE" else "right")
        for stage in list(stats.stages):
            counters.add_row(
                visible(stage.name),
                str(stage.received),
                str(stage.emitted),
                str(stage.lost),
                str(stage.dropped_total),
                str(stage.late),
            )
        parts: list[RenderableType] = [title, counters]
        attached = list(stats.attached)[-4:]
        parts += [_text(line, style="dim", no_wrap=True, overflow="ellipsis") for line in attached]
        for record in results:
            parts.append(Text(""))
            parts.append(_text(self._heading(record), style="bold"))
            parts.append(_text("\n".join(self._result_lines(record)) or "(empty)"))
        if recent:
            parts += [Text(""), _text("\n".join(recent))]
        return Group(*parts)

    @staticmethod
    def _heading(record: Record) -> str:
        if isinstance(record, Histogram):
            what = f"{record.field} ({record.unit})"
            if record.key:
                what += " " + " ".join(f"{k}={v}" for k, v in record.key.items())
        else:
            what = "count by " + ", ".join(getattr(record, "key_fields", []) or ["key"])
        if record.wall_start is not None and record.wall_end is not None:
            start = record.wall_start.astimezone().strftime("%H:%M:%S")
            end = record.wall_end.astimezone().strftime("%H:%M:%S")
            what += f"   {start} - {end}"
        return what

    def _result_lines(self, record: Record) -> list[str]:
        if isinstance(record, Histogram):
            return histogram_lines(record)
        assert isinstance(record, CountTable)
        top = CountTable(
            rows=record.rows[:TABLE_ROWS],
            others=record.others + sum(r.count for r in record.rows[TABLE_ROWS:]),
            key_fields=record.key_fields,
        )
        return count_table_lines(top, widths=self._widths)


def _text(text: str, **style: Any) -> Text:
    """``text`` to draw, its control characters shown (see :mod:`flowtrace.visible`)."""
    return Text(visible(text), **style)
