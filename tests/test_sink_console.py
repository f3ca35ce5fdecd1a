"""The console sink's histogram and count table styles, each against its exact text."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from flowtrace.records import Bucket, CountRow, CountTable, EmptyWindows, Histogram
from flowtrace.sinks.console import (
    Column,
    ConsoleSink,
    HistogramStyle,
    RelativeSeconds,
    TableStyle,
)
from flowtrace.testing import ListSource

pytestmark = pytest.mark.anyio

LEADING_ZEROS = Histogram(
    field="lat",
    unit="usecs",
    scale="log2",
    buckets=[Bucket(0, 1, 0), Bucket(2, 3, 0), Bucket(4, 7, 3), Bucket(8, 15, 1)],
)


async def printed(style: HistogramStyle) -> list[str]:
    out = io.StringIO()
    await (ListSource([LEADING_ZEROS]) | ConsoleSink[Any](stream=out, histogram=style)).run()
    return out.getvalue().splitlines()


async def test_strip_leading_zero_leaves_out_the_empty_rows_before_the_first_count() -> None:
    header = "     usecs               : count     distribution"
    counted = [
        "         4 -> 7          : 3        |****************************************|",
        "         8 -> 15         : 1        |*************                           |",
    ]
    empty = [
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 0        |                                        |",
    ]
    assert await printed(HistogramStyle(strip_leading_zero=True)) == ["", header, *counted]
    assert await printed(HistogramStyle()) == ["", header, *empty, *counted]
    assert await printed(HistogramStyle(blank_line=False)) == [header, *empty, *counted]


TABLES = [
    CountTable(
        rows=[CountRow({"comm": c}, n) for c, n in [("bash", 12), ("sh", 3), ("a", 3)]],
        others=2,
        key_fields=["comm"],
        wall_end=datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    ),
    CountTable(rows=[CountRow({"comm": "systemd-journal"}, 1)], key_fields=["comm"]),
]


async def printed_tables(style: TableStyle | None) -> str:
    out = io.StringIO()
    await (ListSource(TABLES) | ConsoleSink[Any](stream=out, table=style)).run()
    return out.getvalue()


async def test_count_tables_by_default_are_aligned_columns_that_only_widen() -> None:
    assert await printed_tables(None) == (
        "COMM     COUNT\n"
        "bash        12\n"
        "sh           3\n"
        "a            3\n"
        "(others)     2\n"
        "COMM            COUNT\n"
        "systemd-journal     1\n"
    )


async def test_count_table_style_options() -> None:
    ended = TABLES[0].wall_end
    assert ended is not None
    clock = ended.astimezone().strftime("%H:%M:%S")
    style = TableStyle(ascending=True, blank_line=True, timestamp=True)
    assert await printed_tables(style) == (
        f"\n{clock}\n"
        "COMM     COUNT\n"
        "sh           3\n"
        "a            3\n"
        "bash        12\n"
        "(others)     2\n"
        "\n"  # the second table has no wall-clock end: no time line
        "COMM            COUNT\n"
        "systemd-journal     1\n"
    )
    own = TableStyle(line=lambda r: f"{r.count:3d} {r.key['comm']}", title="N  WHO\n-- ---")
    assert await printed_tables(own) == (
        "N  WHO\n-- ---\n 12 bash\n  3 sh\n  3 a\n(others: 2)\n"
        "N  WHO\n-- ---\n  1 systemd-journal\n"
    )
    untitled = TableStyle(line=lambda r: r.key["comm"])
    assert await printed_tables(untitled) == "bash\nsh\na\n(others: 2)\nsystemd-journal\n"


class Numbered:
    """A line callable that numbers the events of its run (so has fresh())."""

    def __init__(self) -> None:
        self.seen = 0

    def fresh(self) -> Numbered:
        return Numbered()

    def __call__(self, event: int) -> str:
        self.seen += 1
        return f"{self.seen}: {event}"


async def test_events_print_through_line_and_each_run_gets_fresh_state() -> None:
    out = io.StringIO()
    sink = ConsoleSink[int](stream=out, line=Numbered())
    await (ListSource([7, 8]) | sink).run()
    await (ListSource([9]) | sink).run()
    assert out.getvalue() == "1: 7\n2: 8\n1: 9\n"


PRINT_TO_PIPE = """
import anyio
from flowtrace.sinks.console import ConsoleSink
from flowtrace.testing import ListSource
anyio.run((ListSource(["a\\udcffb", "c"]) | ConsoleSink(line=str)).run)
"""


def test_a_pipe_gets_the_bytes_standard_output_encodes() -> None:
    """Written to a pipe, lines are encoded as sys.stdout would: with its
    error policy (here surrogateescape, as Python sets up in the C locale:
    an undecodable byte read in goes out again as itself)."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8:surrogateescape")
    done = subprocess.run(
        [sys.executable, "-c", PRINT_TO_PIPE], capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"a\xffb\nc\n"


class Stamped(msgspec.Struct):
    ts: int
    comm: str


async def test_columns_with_relative_seconds_start_afresh_each_run() -> None:
    out = io.StringIO()
    columns = [
        Column("TIME(s)", RelativeSeconds(), width=8, spec=".3f"),
        Column("COMM", lambda e: e.comm),
    ]
    sink = ConsoleSink[Stamped](columns, stream=out, header="Tracing...")
    await (ListSource([Stamped(5_000_000_000, "dd"), Stamped(5_250_000_000, "sh")]) | sink).run()
    await (ListSource([Stamped(9_000_000_000, "cc"), Stamped(9_500_000_000, "ld")]) | sink).run()
    assert out.getvalue() == (
        "Tracing...\nTIME(s)  COMM\n0.000    dd\n0.250    sh\n"
        "Tracing...\nTIME(s)  COMM\n0.000    cc\n0.500    ld\n"
    )


async def test_empty_windows_print_wall_clock_bounds_only_when_both_are_known() -> None:
    wall = datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    runs = [
        EmptyWindows(windows=3, step=1.0, window_start=10.0, window_end=13.0, wall_start=wall),
        EmptyWindows(windows=2, step=0.5, window_start=1.0, window_end=2.0, wall_end=wall),
    ]
    out = io.StringIO()
    await (ListSource(runs) | ConsoleSink[Any](stream=out)).run()
    assert out.getvalue() == (
        "(3 empty windows of 1 s from 10 s to 13 s)\n(2 empty windows of 0.5 s from 1 s to 2 s)\n"
    )
