"""``flowtrace plot``: heatmaps and histograms from NDJSON histogram records
and from recordings, checked by parsing the SVG (cells, bars, colours,
labels); bad input is one line."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from clirun import flowtrace

from flowtrace import Event, Pipeline
from flowtrace.ktypes import ktime_ns, u64
from flowtrace.recorder import RecordingSource
from flowtrace.records import Bucket, Histogram
from flowtrace.schema import RecordEncoder
from flowtrace.testing import CollectSink, ListSource

pytest.importorskip("matplotlib")

SVG = "{http://www.w3.org/2000/svg}"


def group(svg: Path, gid: str) -> list[ET.Element]:
    """The drawn shapes of the SVG group ``gid``."""
    root = ET.parse(svg).getroot()
    found = [g for g in root.iter(f"{SVG}g") if g.get("id") == gid]
    assert len(found) == 1, f"no group {gid!r} in {svg}"
    return [e for e in found[0].iter() if e.tag in (f"{SVG}path", f"{SVG}use")]


def fill(shape: ET.Element) -> str:
    match = re.search(r"fill:\s*(#[0-9a-f]{6})", shape.get("style", ""))
    assert match, shape.attrib
    return match.group(1)


def darkness(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return -(0.299 * r + 0.587 * g + 0.114 * b)


def texts(svg: Path) -> list[str]:
    return [t.text or "" for t in ET.parse(svg).getroot().iter(f"{SVG}text")]


def write_histograms(path: Path) -> None:
    """Three one-second windows of usecs histograms; the second has two keys."""
    windows = [
        (10.0, None, [(2, 3, 5), (4, 7, 0), (8, 15, 1)]),
        (11.0, {"comm": "a"}, [(4, 7, 40)]),
        (11.0, {"comm": "b"}, [(4, 7, 2), (8, 15, 3)]),
        (12.0, None, [(0, 1, 7)]),
    ]
    encoder = RecordEncoder()
    lines = [
        Histogram(
            field="lat_ns",
            unit="usecs",
            scale="log2",
            buckets=[Bucket(*b) for b in buckets],
            key=key,
            window_start=start,
            window_end=start + 1,
        )
        for start, key, buckets in windows
    ]
    path.write_bytes(encoder.json_lines(lines) + encoder.json_line({"not": "a histogram"}))


def test_heatmap_and_histogram_from_histogram_records(tmp_path: Path) -> None:
    records = tmp_path / "hist.ndjson"
    write_histograms(records)
    heat, hist = tmp_path / "heat.svg", tmp_path / "hist.svg"
    result = flowtrace("plot", str(records), "--heatmap", str(heat), "--histogram", str(hist))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{heat}: heatmap of lat_ns (usecs), 5 cells",
        f"{hist}: histogram of lat_ns (usecs), 4 buckets",
    ]
    # non-empty (second, bucket) cells: (0, 2->3)=5 (0, 8->15)=1 (1, 4->7)=42 (1, 8->15)=3
    # (2, 0->1)=7, drawn in that order
    cells = group(heat, "heatmap-cells")
    assert len(cells) == 5
    counts = [5, 1, 42, 3, 7]
    colours = [fill(c) for c in cells]
    by_count = [c for _, c in sorted(zip(counts, colours, strict=True))]
    assert [darkness(c) for c in by_count] == sorted(darkness(c) for c in colours)
    assert len(set(colours)) == 5  # every count its own colour
    labels = texts(heat)
    assert {"0 -> 1", "2 -> 3", "4 -> 7", "8 -> 15"} <= set(labels)
    assert "lat_ns (usecs) over time" in labels

    bars = group(hist, "histogram-bars")
    assert len(bars) == 4  # 0 -> 1 .. 8 -> 15, as bcc prints them
    heights = [_height(b) for b in bars]
    totals = [7, 5, 42, 4]
    assert heights[2] == max(heights)
    for h, n in zip(heights, totals, strict=True):
        assert h == pytest.approx(heights[2] * n / 42, rel=1e-3)


def _height(bar: ET.Element) -> float:
    ys = [float(y) for y in re.findall(r"[-\d.]+ ([-\d.]+)", bar.get("d", ""))]
    return max(ys) - min(ys)


class Read(Event, frozen=True):
    ts: ktime_ns
    lat_ns: u64


class Reads(ListSource[Read]):
    def event_type(self) -> type[Read]:
        return Read


def test_heatmap_from_a_recording_buckets_a_field_by_time(tmp_path: Path) -> None:
    second = 1_000_000_000
    events = [
        Read(5 * second, 3_000),  # 3 us: 2 -> 3, column 0
        Read(5 * second + 10, 3_500),  # 2 -> 3, column 0
        Read(5 * second + 600_000_000, 100_000),  # 100 us: 64 -> 127, column 0
        Read(7 * second, 1_000),  # 1 us: 0 -> 1, column 2
    ]
    recording = tmp_path / "reads.rec"
    pipeline = Pipeline(RecordingSource(Reads(events), recording), [], CollectSink[Any]())
    anyio.run(pipeline.run)
    heat = tmp_path / "heat.svg"
    result = flowtrace("plot", str(recording), "--heatmap", str(heat))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{heat}: heatmap of lat_ns (usecs), 3 cells\n"
    assert len(group(heat, "heatmap-cells")) == 3
    assert "seconds since " in " ".join(texts(heat))
    ms = flowtrace(
        "plot", str(recording), "--histogram", str(tmp_path / "h.svg"), "--unit", "nsecs"
    )
    assert ms.stdout.endswith("histogram of lat_ns (nsecs), 8 buckets\n")  # 512 .. 131071 ns


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("hello\n", ["--heatmap", "x.svg"], "not flowtrace NDJSON (its first line is no record)"),
        (None, [], "say what to draw: --heatmap OUT.svg and/or --histogram OUT.svg"),
        ('{"v":1,"type":"summary","data":{}}\n', ["--heatmap", "x.svg"], "holds no histogram"),
        (None, ["--heatmap", "/no/such/dir/x.svg"], "no directory for '/no/such/dir/x.svg'"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, content: str | None, args: list[str], message: str
) -> None:
    path = tmp_path / "in.ndjson"
    if content is None:
        write_histograms(path)
    else:
        path.write_text(content)
    result = flowtrace("plot", str(path), *args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x.svg").exists()


def test_a_field_that_is_not_there(tmp_path: Path) -> None:
    recording = tmp_path / "reads.rec"
    pipeline = Pipeline(
        RecordingSource(Reads([Read(1, 2)]), recording), [], CollectSink[Any]()
    )
    anyio.run(pipeline.run)
    result = flowtrace("plot", str(recording), "--heatmap", "x.svg", "--field", "nope")
    assert result.returncode == 2
    assert "its Read events have no field 'nope'; fields: ts, lat_ns" in result.stderr
    assert msgspec.json.decode(recording.read_bytes().splitlines()[0])["type"] == "recording"
