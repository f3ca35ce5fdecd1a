"""The console sink with operator results: the tutorial lessons' output,
compared with what bcc's own code prints for the same data.

The %-formats below are the tutorial tools' own format strings, on purpose.
"""

# ruff: noqa: UP031

from __future__ import annotations

import contextlib
import copy
import fcntl
import io
import os
import struct
import sys
import termios
from collections import Counter
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import pytest
from bcc import table as bcc_table  # bcc is required: without it these tests fail, not skip

from flowtrace import Run, StageError
from flowtrace.clock import ManualClock
from flowtrace.loader import load_pipeline
from flowtrace.operators import Tumbling, count, join, log2_histogram
from flowtrace.records import CountRow, CountTable, JoinIncomplete
from flowtrace.sinks.console import Column, ConsoleSink, HistogramStyle, TableStyle
from flowtrace.testing import ListSource, OperatorHarness


class BlockIO(msgspec.Struct, frozen=True):
    bytes: int
    comm: str = "dd"


class Strlen(msgspec.Struct, frozen=True):
    s: str


class Switch(msgspec.Struct, frozen=True):
    prev_pid: int
    next_pid: int


def bcc_prints(fn: Any, *args: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args)
    return out.getvalue()


async def run(events: list[Any], *stages: Any, sink: ConsoleSink[Any]) -> None:
    flow: Any = ListSource(events, batch_size=7)
    for stage in stages:
        flow = flow | stage
    await (flow | sink).run()


SIZES = [512, 4096, 4096, 8192, 131072, 131072, 131072, 1 << 20, 0, 100]


@pytest.mark.anyio
async def test_bitehist_prints_the_histogram_as_bcc_at_the_end() -> None:
    out = io.StringIO()
    sink = ConsoleSink[Any](header="Tracing block I/O... Hit Ctrl-C to end.", stream=out)
    await run(
        [BlockIO(n) for n in SIZES],
        log2_histogram("bytes", unit="kbytes", divisor=1024),
        sink=sink,
    )
    table = [0] * 65
    for n in SIZES:
        table[max(1, (n // 1024).bit_length())] += 1
    expected = bcc_prints(bcc_table._print_log2_hist, table, "kbytes", None)
    assert out.getvalue() == "Tracing block I/O... Hit Ctrl-C to end.\n" + "\n" + expected
    assert "       128 -> 255        : 3        |" in expected  # 128 KiB writes


def test_vfsreadlat_prints_one_histogram_per_interval() -> None:
    clock = ManualClock()
    h = OperatorHarness(log2_histogram("bytes", unit="usecs", every=Tumbling(1.0), limit=3), clock)
    h.feed([BlockIO(5), BlockIO(700)])
    h.advance(1.0)  # an interval with reads
    h.advance(1.0)  # a quiet one
    h.feed([BlockIO(1)])
    h.advance(1.0)
    assert h.pipeline_stop_requested
    sink = ConsoleSink[Any](stream=(out := io.StringIO()))
    text = "".join(line + "\n" for item in h.emitted for line in sink.lines(item))
    first, quiet, third = [0] * 65, [0] * 65, [0] * 65
    first[3] = first[10] = 1
    third[1] = 1
    expected = "".join(
        "\n" + bcc_prints(bcc_table._print_log2_hist, t, "usecs", None)
        for t in (first, quiet, third)
    )
    assert text == expected
    assert out.getvalue() == ""


@pytest.mark.anyio
async def test_strlen_count_prints_count_string_lowest_first() -> None:
    words = ["a", "bb", "a", "ccc", "bb", "a", "dd"]
    out = io.StringIO()
    style = TableStyle(
        title="%10s %s" % ("COUNT", "STRING"),
        line=lambda r: '%10d "%s"' % (r.count, r.key["s"]),
        ascending=True,
    )
    await run(
        [Strlen(w) for w in words], count("s"), sink=ConsoleSink[Any](table=style, stream=out)
    )
    # what strlen_count.py prints: sorted by value, formatted with its strings
    counts = Counter(words)
    expected = "%10s %s\n" % ("COUNT", "STRING") + "".join(
        '%10d "%s"\n' % (v, k) for k, v in sorted(counts.items(), key=lambda kv: kv[1])
    )
    assert out.getvalue() == expected


@pytest.mark.anyio
async def test_task_switch_prints_one_line_per_pair() -> None:
    pairs = [(1, 2), (2, 1), (1, 2), (3, 1)]
    out = io.StringIO()
    style = TableStyle(
        line=lambda r: "task_switch[%5d->%5d]=%u" % (r.key["prev_pid"], r.key["next_pid"], r.count)
    )
    await run(
        [Switch(p, n) for p, n in pairs],
        count(["prev_pid", "next_pid"]),
        sink=ConsoleSink[Any](table=style, stream=out),
    )
    assert out.getvalue() == (
        "task_switch[    1->    2]=2\ntask_switch[    2->    1]=1\ntask_switch[    3->    1]=1\n"
    )


def test_default_count_table_is_aligned_columns() -> None:
    table = CountTable(
        rows=[
            CountRow({"comm": "systemd-journal", "pid": 7}, 1200),
            CountRow({"comm": "sh", "pid": 42}, 3),
        ],
        others=5,
        key_fields=["comm", "pid"],
    )
    assert ConsoleSink[Any]().lines(table) == [
        "COMM            PID COUNT",
        "systemd-journal 7    1200",
        "sh              42      3",
        "(others)                5",
    ]
    empty = CountTable(rows=[], key_fields=["comm"])
    assert ConsoleSink[Any]().lines(empty) == ["COMM COUNT"]


def test_keyed_histograms_have_bcc_section_lines() -> None:
    h = OperatorHarness(log2_histogram("bytes", unit="bytes", by="comm"))
    h.feed([BlockIO(3, "dd"), BlockIO(9, "cp")])
    dd, cp = h.finish()
    sink = ConsoleSink[Any](histogram=HistogramStyle(section_header="comm"))
    assert sink.lines(dd)[:2] == ["", "comm = 'dd'"]
    assert sink.lines(cp)[:2] == ["", "comm = 'cp'"]
    custom = ConsoleSink[Any](histogram=HistogramStyle(section=lambda k: f"== {k['comm']} =="))
    assert custom.lines(cp)[:3] == [
        "",
        "== cp ==",
        "     bytes               : count     distribution",
    ]


def test_side_records_and_events_print_one_line_each() -> None:
    h = OperatorHarness(join(BlockIO, Strlen, key="comm", time_field=None))
    [incomplete] = h.feed([BlockIO(1, "x"), BlockIO(2, "x")])
    assert isinstance(incomplete, JoinIncomplete)
    assert ConsoleSink[Any]().lines(incomplete) == [
        "join_incomplete: key={'comm': 'x'} start=BlockIO(bytes=1, comm='x')"
        " reason='replaced' waited=0.0"
    ]
    with pytest.raises(
        ValueError, match=r"cannot print a BlockIO: pass columns=\.\.\. or line=\.\.\."
    ):
        ConsoleSink[Any]().lines(BlockIO(1))


@pytest.mark.anyio
async def test_columns_still_print_events() -> None:
    out = io.StringIO()
    sink = ConsoleSink[BlockIO](
        [Column("BYTES", lambda e: e.bytes, 8), Column("COMM", lambda e: e.comm)], stream=out
    )
    await run([BlockIO(1), BlockIO(22, "cp")], sink=sink)
    assert out.getvalue() == "BYTES    COMM\n1        dd\n22       cp\n"


@pytest.mark.anyio
async def test_count_tables_keep_their_column_widths_across_intervals() -> None:
    first = CountTable(rows=[CountRow({"comm": "systemd-journal"}, 1200)], key_fields=["comm"])
    second = CountTable(rows=[CountRow({"comm": "sh"}, 3)], key_fields=["comm"])
    out = io.StringIO()
    sink = ConsoleSink[Any](stream=out).fresh()
    await sink.open(_context())
    await sink.write([first])
    await sink.write([second])
    assert out.getvalue().splitlines() == [
        "COMM            COUNT",
        "systemd-journal  1200",
        "COMM            COUNT",
        f"{'sh':<15} {3:>5}",
    ]
    # another run starts afresh
    again = io.StringIO()
    sink = ConsoleSink[Any](stream=again).fresh()
    await sink.open(_context())
    await sink.write([second])
    assert again.getvalue().splitlines() == ["COMM COUNT", "sh       3"]


def _context() -> Any:
    from flowtrace.context import StageContext
    from flowtrace.stats import StageStats

    return StageContext(StageStats("console"), ManualClock(), lambda _: None)


@pytest.mark.anyio
async def test_timestamps_above_interval_output_are_the_windows_wall_clock_end() -> None:
    wall = ManualClock(100.0, wall_start=1_700_000_000.0)  # 2023-11-14T22:13:20Z
    out = io.StringIO()
    events = [BlockIO(4096), BlockIO(4096)]
    source = ListSource(events, batch_size=1)
    pipeline = (
        source
        | log2_histogram("bytes", unit="kbytes", divisor=1024)
        | ConsoleSink[Any](stream=out, histogram=HistogramStyle(timestamp=True))
    ).replace(clock=wall)
    await pipeline.run()
    import datetime

    ended = datetime.datetime.fromtimestamp(1_700_000_000.0, datetime.timezone.utc)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["", ended.astimezone().strftime("%H:%M:%S")]
    assert lines[2].lstrip().startswith("kbytes")


@pytest.mark.anyio
async def test_wall_clock_bounds_are_the_monotonic_bounds_apart() -> None:
    from flowtrace.testing import CollectSink

    sink = CollectSink[Any]()
    clock = ManualClock(50.0, wall_start=1_700_000_000.25)
    events = [BlockIO(4096)]
    await (
        ListSource(events) | log2_histogram("bytes", every=Tumbling(2.0)) | sink
    ).replace(clock=clock).run()
    [hist] = sink.items
    assert hist.wall_start.timestamp() == 1_700_000_000.25 + (hist.window_start - 50.0)
    assert (hist.wall_end - hist.wall_start).total_seconds() == hist.window_end - hist.window_start


@pytest.mark.anyio
async def test_control_characters_from_events_are_shown_not_obeyed() -> None:
    """A process can name itself with escape sequences (prctl PR_SET_NAME);
    the console shows them as text instead of letting the terminal act."""
    out = io.StringIO()
    hostile = "\x1b]0;PWN\x07\x1b[2J\x9b"
    sink = ConsoleSink[str](line=lambda e: f"comm={e}", stream=out)
    forged = "x\nflowtrace: sys_sync: 0 in, 0 out"
    await (ListSource([hostile, "plain\tok", forged]) | sink).run()
    assert out.getvalue() == (
        "comm=\\x1b]0;PWN\\x07\\x1b[2J\\x9b\n"
        "comm=plain\tok\n"
        "comm=x\\x0aflowtrace: sys_sync: 0 in, 0 out\n"  # one event, one line
    )


@pytest.mark.anyio
@pytest.mark.parametrize("lesson", ["sync_count.py", "sync_perf_output.py"])
async def test_quick_sync_lessons_count_time_from_each_runs_first_sync(lesson: str) -> None:
    lesson_sink = load_pipeline(f"pipelines/{lesson}").sink
    assert isinstance(lesson_sink, ConsoleSink)
    for first in (5, 9):  # two runs of one pipeline object, the second 4 s later
        out = io.StringIO()
        sink = copy.copy(lesson_sink)
        sink.stream = out
        sink = sink.fresh()
        await sink.open(_context())
        gap, seconds = 10**8, (first, first + 1)
        syncs = [SimpleNamespace(ts=s * 10**9, gap=gap, gap_ns=gap, seq=2) for s in seconds]
        await sink.write(syncs)
        times = [line.split(" s:")[0] for line in out.getvalue().splitlines()[1:]]
        assert times == ["At time 0.00", "At time 1.00"]


def test_a_pipe_closed_mid_batch_counts_only_the_lines_it_did_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-page pipe takes 4,096 bytes of a batch of 1,000 lines of 100
    bytes, then its reader goes: 40 lines are whole in the pipe, 960 are
    not printed (the 41st only in part)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    lines = ConsoleSink[int](line="{:099d}".format)
    run = Run(ListSource(range(1000), batch_size=1000) | lines)

    async def close_reader_when_full() -> None:
        while _pending_bytes(read_end) < 4096:  # noqa: ASYNC110 (a pipe has no event)
            await anyio.sleep(0.01)  # poll interval of this bounded wait
        os.close(read_end)

    async def main() -> None:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(close_reader_when_full)
                with pytest.raises(StageError, match="Broken pipe"):
                    await run.run()

    with open(write_end, "w", encoding="utf-8") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        anyio.run(main)
    console = run.stats.stage("console")
    assert (console.received, console.dropped) == (1000, {"write_error": 960})


def _pending_bytes(fd: int) -> int:
    pending: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    return pending
