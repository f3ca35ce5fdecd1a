"""``flowtrace plot REC --heatmap OUT.svg --histogram OUT.svg``: pictures
of latency, drawn with matplotlib.

REC is either a recording (``flowtrace run --record``) or an NDJSON file
of histogram records (``flowtrace run -o ndjson`` or ``--sink ndjson:PATH``):

* from a recording, the values of one event field (``--field``; by
  default the one field whose name has ``lat`` in it) are read as
  nanoseconds, shown in ``--unit`` (usecs by default), put in bcc's log2
  buckets, and cut into columns of ``--interval`` seconds of the events'
  own timestamps (``ts``; arrival times when there is none);
* from NDJSON, every ``histogram`` record is one column at its window's
  start (histograms of one window with different keys are added up), and
  its buckets are the rows.

The heatmap is drawn as Brendan Gregg draws latency heatmaps: time on x,
one row per log2 bucket on y, colour = count (on a log scale, so a
single slow request shows); empty cells are left white.
Each non-empty cell is one rectangle in the SVG group ``heatmap-cells``.
The histogram has one bar per bucket from the lowest to the highest
non-empty one (as bcc prints it), in the SVG group ``histogram-bars``.
Problems (a file that is neither, no such field, nothing to draw) are one
:class:`~flowtrace.errors.PipelineFileError` line.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from .errors import FlowtraceError, PipelineFileError
from .operators.buckets import log2_bounds, log2_index
from .recording import MALFORMED, malformed, open_recording
from .records import Histogram
from .render import histogram_counts

__all__ = ["Latencies", "draw_heatmap", "draw_histogram", "plot_command", "read_latencies"]

UNIT_NS = {"nsecs": 1, "usecs": 1000, "msecs": 1_000_000}


@dataclass
class Latencies:
    """Counts by (column start in seconds, bucket slot), what the pictures
    are drawn from; ``scale`` is ``log2`` or ``linear`` (slot = value)."""

    what: str
    unit: str
    interval: float
    scale: str = "log2"
    cells: dict[tuple[float, int], int] = field(default_factory=lambda: defaultdict(int))
    start: datetime | None = None

    def totals(self) -> dict[int, int]:
        """Counts by slot over all columns."""
        totals: dict[int, int] = defaultdict(int)
        for (_, slot), count in self.cells.items():
            totals[slot] += count
        return dict(totals)

    def label(self, slot: int) -> str:
        if self.scale == "linear":
            return str(slot)
        low, high = log2_bounds(slot)
        return f"{low} -> {high}"


def _kind(path: Path) -> str:
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 20)
    except OSError as exc:
        raise PipelineFileError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        kind = json.loads(first).get("type")
    except (ValueError, AttributeError, RecursionError):
        kind = None
    if kind is None:
        raise PipelineFileError(
            f"{path}: not flowtrace NDJSON (its first line is no record); give a recording"
            " (--record) or an NDJSON file of histogram records (-o ndjson)"
        )
    return "recording" if kind == "recording" else "records"


def _recording(path: Path, field_name: str | None, unit: str, interval: float) -> Latencies:
    reader = open_recording(path)
    fields = reader.event.__struct_fields__
    chosen = field_name or _latency_field(path, fields)
    if chosen not in fields:
        raise PipelineFileError(
            f"{path}: its {reader.event.__name__} events have no field {chosen!r};"
            f" fields: {', '.join(fields)}"
        )
    divisor = UNIT_NS[unit]
    data = Latencies(f"{chosen} ({unit})", unit, interval)
    wall = reader.header.wall_start
    if wall is not None:
        data.start = datetime.fromtimestamp(wall, timezone.utc)
    has_ts = "ts" in fields
    first: float | None = None
    for at, batch in reader:
        for event in batch:
            stamped: Any = event  # a recorded type: fields known at run time
            when = stamped.ts / 1e9 if has_ts else at
            first = when if first is None else first
            column = (when - first) // interval * interval
            value = getattr(event, chosen)
            data.cells[column, log2_index(int(value) // divisor)] += 1
    return data


def _latency_field(path: Path, fields: tuple[str, ...]) -> str:
    found = [f for f in fields if "lat" in f.lower()]
    if len(found) != 1:
        raise PipelineFileError(
            f"{path}: say which field to plot with --field (fields: {', '.join(fields)})"
        )
    return found[0]


def _records(path: Path) -> Latencies:
    lines_decoder = msgspec.json.Decoder(_Line)
    histogram_decoder = msgspec.json.Decoder(Histogram)
    data: Latencies | None = None
    windows: list[float] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = lines_decoder.decode(line)
                if record.type != "histogram":
                    continue
                hist = histogram_decoder.decode(record.data)
            except MALFORMED as exc:
                problem = malformed(exc)
                raise PipelineFileError(f"{path}:{number}: not a record: {problem}") from None
            if data is None:
                data = Latencies(f"{hist.field} ({hist.unit})", hist.unit, 1.0, hist.scale)
                data.start = hist.wall_start
            try:
                counts = histogram_counts(hist)
            except ValueError as exc:
                raise PipelineFileError(f"{path}:{number}: {exc}") from None
            start = hist.window_start if hist.window_start is not None else float(number)
            windows.append(start)
            for slot, count in enumerate(counts):
                if count:
                    data.cells[start, slot] += count
    if data is None:
        raise PipelineFileError(f"{path}: holds no histogram records to draw")
    ordered = sorted(set(windows))
    if len(ordered) > 1:
        data.interval = min(b - a for a, b in itertools.pairwise(ordered))
    origin = ordered[0]
    data.cells = defaultdict(int, {(t - origin, s): n for (t, s), n in data.cells.items()})
    return data


class _Line(msgspec.Struct):
    """A record: its type, and its data not yet decoded."""

    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")


def read_latencies(
    path: Path, *, field_name: str | None = None, unit: str = "usecs", interval: float = 1.0
) -> Latencies:
    """What a recording or an NDJSON file of histograms says (see the module docstring)."""
    try:
        if _kind(path) == "recording":
            return _recording(path, field_name, unit, interval)
        return _records(path)
    except (PipelineFileError, FlowtraceError):
        raise
    except OSError as exc:
        raise PipelineFileError(f"{path}: cannot read it: {exc.strerror}") from None


def _figure(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "flowtrace"  # the same file for the same data
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5.5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    return figure, axes


def _time_label(data: Latencies) -> str:
    if data.start is None:
        return "seconds"
    return f"seconds since {data.start.strftime('%Y-%m-%d %H:%M:%S')} UTC"


def draw_heatmap(data: Latencies, out: Path, title: str | None = None) -> int:
    """Draw the heatmap to ``out`` (SVG, or PNG/PDF by its suffix); returns
    the number of cells drawn."""
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    cells = sorted((t, slot, n) for (t, slot), n in data.cells.items() if n)
    if not cells:
        raise PipelineFileError("nothing to draw: no values were found")
    figure, axes = _figure(title or f"{data.what} over time")
    rectangles = [Rectangle((t, slot), data.interval, 1) for t, slot, _ in cells]
    most = max(n for _, _, n in cells)
    collection = PatchCollection(
        rectangles, cmap="YlOrRd", edgecolors="none", norm=LogNorm(1, max(most, 2))
    )
    collection.set_array([n for _, _, n in cells])
    collection.set_gid("heatmap-cells")
    axes.add_collection(collection)
    low = min(slot for _, slot, _ in cells)
    high = max(slot for _, slot, _ in cells)
    end = max(t for t, _, _ in cells) + data.interval
    axes.set_xlim(0, end)
    axes.set_ylim(low, high + 1)
    axes.set_yticks([s + 0.5 for s in range(low, high + 1)])
    axes.set_yticklabels([data.label(s) for s in range(low, high + 1)])
    axes.set_xlabel(_time_label(data))
    axes.set_ylabel(f"{data.unit} ({data.scale} buckets)")
    figure.colorbar(collection, ax=axes, label="count (log scale)")
    figure.savefig(out)  # the format from the file name: svg, png, pdf
    return len(cells)


def draw_histogram(data: Latencies, out: Path, title: str | None = None) -> int:
    """Draw the histogram of every column together to ``out`` (SVG);
    returns the number of bars drawn."""
    totals = data.totals()
    used = [s for s, n in totals.items() if n]
    if not used:
        raise PipelineFileError("nothing to draw: no values were found")
    slots = list(range(min(used), max(used) + 1))
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    figure, axes = _figure(title or f"{data.what}, {sum(totals.values())} values")
    heights = [totals.get(s, 0) for s in slots]
    bars = PatchCollection(
        [Rectangle((i - 0.4, 0), 0.8, h) for i, h in enumerate(heights)],
        facecolor="#d95f0e",
        edgecolor="none",
    )
    bars.set_gid("histogram-bars")
    axes.add_collection(bars)
    axes.set_xlim(-0.6, len(slots) - 0.4)
    axes.set_ylim(0, max(heights) * 1.05)
    axes.set_xticks(range(len(slots)))
    axes.set_xticklabels([data.label(s) for s in slots], rotation=45, ha="right")
    axes.set_xlabel(f"{data.unit} ({data.scale} buckets)")
    axes.set_ylabel("count")
    figure.savefig(out)
    return len(slots)


def plot_command(args: argparse.Namespace) -> int:
    """``flowtrace plot``: read REC, draw what was asked for."""
    if not args.heatmap and not args.histogram:
        raise PipelineFileError("say what to draw: --heatmap OUT.svg and/or --histogram OUT.svg")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PipelineFileError(
            "flowtrace plot draws with matplotlib: pip install 'flowtrace[plot]'"
        ) from None
    for target in (args.heatmap, args.histogram):
        if target and not Path(target).resolve().parent.is_dir():
            raise PipelineFileError(f"no directory for {target!r}")
    data = read_latencies(
        Path(args.input), field_name=args.field, unit=args.unit, interval=args.interval
    )
    if args.heatmap:
        cells = draw_heatmap(data, Path(args.heatmap), args.title)
        print(f"{args.heatmap}: heatmap of {data.what}, {cells} cells")
    if args.histogram:
        bars = draw_histogram(data, Path(args.histogram), args.title)
        print(f"{args.histogram}: histogram of {data.what}, {bars} buckets")
    return 0

