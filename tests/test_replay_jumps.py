"""Replays whose clock jumps far: a windowed operator says a long run of
empty windows in one record rather than building each, and a recording
cannot claim arrival times past the reader's bound."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from forged import reads_recording

from flowtrace.clock import ManualClock
from flowtrace.operators import Collect, Count, Sliding, Tumbling, log2_histogram, window
from flowtrace.operators.windows import MAX_EMPTY_RUN
from flowtrace.recording import MAX_SPAN, RecordingReader, ReplayError
from flowtrace.records import EmptyWindows, Histogram, Record, WindowResult
from flowtrace.sinks.console import empty_windows_line
from flowtrace.sources.reads import ReadLatency
from flowtrace.testing import OperatorHarness


def window_results(records: list[Record]) -> list[WindowResult]:
    assert all(isinstance(r, WindowResult) for r in records)
    return [r for r in records if isinstance(r, WindowResult)]


FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))
ROOT = Path(__file__).resolve().parent.parent
YEAR_OF_SECONDS = 365 * 24 * 3600.0


def empty_runs(records: list[Record]) -> list[tuple[int, float | None, float | None]]:
    return [
        (r.windows, r.window_start, r.window_end) for r in records if isinstance(r, EmptyWindows)
    ]


def test_a_year_long_jump_is_one_record_of_empty_windows() -> None:
    clock = ManualClock(10.0)
    h = OperatorHarness(window(Count(), every=Tumbling(1.0)), clock)
    h.feed([1, 2, 3])
    started = time.monotonic()
    emitted = h.advance(YEAR_OF_SECONDS)
    assert time.monotonic() - started < 1.0
    assert len(emitted) == 2
    assert [(r.window_start, r.window_end, r.value) for r in window_results(emitted[:1])] == [
        (10.0, 11.0, 3)
    ]
    assert emitted[1] == EmptyWindows(
        windows=int(YEAR_OF_SECONDS) - 1, step=1.0, window_start=11.0,
        window_end=10.0 + YEAR_OF_SECONDS,
    )  # fmt: skip
    assert h.operator.summarised_windows == YEAR_OF_SECONDS - 1  # type: ignore[attr-defined]
    assert h.reports == []
    # windows go on from the new time as before, and nothing is lost
    h.feed([4])
    later = h.advance(1.0)
    assert [r.value for r in window_results(later)] == [1]
    assert window_results(later)[0].window_start == 10.0 + YEAR_OF_SECONDS
    assert h.stats.dropped == {}


def test_runs_up_to_the_bound_are_emitted_one_by_one_and_longer_ones_at_once() -> None:
    h = OperatorHarness(window(Count(), every=Tumbling(1.0)), ManualClock(0.0))
    h.feed([1])
    emitted = h.advance(MAX_EMPTY_RUN + 1.0)  # the window with the event, then the bound
    assert [r.value for r in window_results(emitted)] == [1] + [0] * MAX_EMPTY_RUN
    assert h.operator.summarised_windows == 0  # type: ignore[attr-defined]
    h.feed([2])
    emitted = h.advance(MAX_EMPTY_RUN + 2.0)
    assert [r.value for r in window_results(emitted[:1])] == [1]
    first = MAX_EMPTY_RUN + 2.0
    assert empty_runs(emitted[1:]) == [(MAX_EMPTY_RUN + 1, first, first + MAX_EMPTY_RUN + 1)]
    assert h.operator.summarised_windows == MAX_EMPTY_RUN + 1  # type: ignore[attr-defined]


def test_sliding_windows_holding_events_are_all_emitted_before_the_empty_run() -> None:
    h = OperatorHarness(window(Collect(), every=Sliding(4.0, 1.0)), ManualClock(0.0))
    h.feed([1])
    h.advance(1.0)
    h.feed([2])
    emitted = h.advance(1e6)
    results = [(r.window_start, r.window_end, r.value) for r in window_results(emitted[:-1])]
    assert results == [  # window 0 came at the first advance; these cover event 2
        (0.0, 2.0, [1, 2]),
        (0.0, 3.0, [1, 2]),
        (0.0, 4.0, [1, 2]),
        (1.0, 5.0, [2]),
    ]
    assert empty_runs(emitted[-1:]) == [(1e6 - 4, 2.0, 1e6 + 1)]
    assert window_results(h.finish())[-1].value == []


def test_a_limit_within_reach_emits_the_empty_windows_one_by_one() -> None:
    h = OperatorHarness(window(Count(), every=Tumbling(1.0), limit=5), ManualClock(0.0))
    h.feed([1])
    emitted = h.advance(1e9)
    assert [r.value for r in window_results(emitted)] == [1, 0, 0, 0, 0]
    assert h.pipeline_stop_requested
    assert h.operator.summarised_windows == 0  # type: ignore[attr-defined]


def test_a_record_of_empty_windows_counts_towards_the_limit_and_stops_at_it() -> None:
    h = OperatorHarness(window(Count(), every=Tumbling(1.0), limit=100), ManualClock(0.0))
    h.feed([1])
    emitted = h.advance(1e9)
    assert [r.value for r in window_results(emitted[:1])] == [1]
    assert empty_runs(emitted[1:]) == [(99, 1.0, 100.0)]
    assert h.pipeline_stop_requested
    h.feed([2])
    assert h.stats.dropped == {"after_limit": 1}


def test_jump_at_end_of_stream_is_bounded_too() -> None:
    clock = ManualClock(0.0)
    h = OperatorHarness(log2_histogram("lat_ns", every=Tumbling(0.001)), clock)
    h.feed([ReadLatency(ts=1, lat_ns=5, ret=1, pid=7, tid=7, comm="cat")])
    clock.advance(1e7)  # no tick: finish sees the whole jump
    started = time.monotonic()
    out = h.finish()
    assert time.monotonic() - started < 1.0
    histograms = [r for r in out if isinstance(r, Histogram)]
    assert [sum(b.count for b in r.buckets) for r in histograms] == [1, 0]
    assert histograms[-1].window_end == 1e7
    assert empty_runs(out) == [(1e10 - 1, 0.001, 1e7)]
    assert h.operator.summarised_windows == 1e10 - 1  # type: ignore[attr-defined]


def test_vfsreadlat_replays_a_recording_with_a_long_gap_at_once(tmp_path: Path) -> None:
    """The reviewer's reads_gap.rec: two reads, then the end 10^7 s later."""
    recording = tmp_path / "gap.rec"
    reads_recording(recording, [100.5, 100.5], end_at=100.0 + 1e7)
    started = time.monotonic()
    result = subprocess.run(
        [FLOWTRACE, "run", "--replay", str(recording), "pipelines/vfsreadlat.py", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    assert result.stdout.count("usecs") == 1  # the window with the two reads
    assert "4 -> 7          : 2" in result.stdout
    assert "(9999999 empty windows of 1 s from 101 s to 10000100 s)" in result.stdout
    assert "flowtrace: log2_histogram: 2 in, 3 out" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("ats", "end_at", "line"),
    [
        ([100.5, 100.0 + MAX_SPAN + 1], 100.0 + MAX_SPAN + 1, 3),
        ([100.5], 100.0 + MAX_SPAN + 0.5, 3),  # the end record's time too
        ([1e300], 1e300, 2),
    ],
)
def test_arrival_times_past_the_bound_are_refused(
    tmp_path: Path, ats: list[float], end_at: float, line: int
) -> None:
    recording = tmp_path / "far.rec"
    reads_recording(recording, ats, end_at=end_at)
    with pytest.raises(ReplayError) as info:
        RecordingReader(recording, ReadLatency).check()
    text = str(info.value)
    assert text.startswith(f"{recording}:{line}: arrival time "), text
    assert "is more than 31622400 s (366 days) after the recording's start 100.0" in text
    assert "\n" not in text and text.endswith("; record it again with flowtrace run --record")


def test_the_bound_itself_is_accepted(tmp_path: Path) -> None:
    recording = tmp_path / "year.rec"
    reads_recording(recording, [100.5], end_at=100.0 + MAX_SPAN)
    assert RecordingReader(recording, ReadLatency).check().events == 1


@pytest.mark.parametrize("start", [1e300, -1e13])
def test_a_start_time_past_any_clock_is_refused(tmp_path: Path, start: float) -> None:
    recording = tmp_path / "start.rec"
    reads_recording(recording, [start], end_at=start, start=start)
    with pytest.raises(ReplayError, match=r"start\.rec:1: start time .* is not a finite number"):
        RecordingReader(recording, ReadLatency)


def test_cli_refuses_a_recording_past_the_bound_before_running(tmp_path: Path) -> None:
    recording = tmp_path / "far.rec"
    reads_recording(recording, [100.5], end_at=100.0 + 2 * MAX_SPAN)
    result = subprocess.run(
        [FLOWTRACE, "run", "--replay", str(recording), "pipelines/vfsreadlat.py", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"flowtrace: error: {recording}:3: arrival time ")


def test_the_console_line_of_a_run_of_empty_windows() -> None:
    start = datetime(2026, 11, 29, 10, 0, 1, tzinfo=timezone.utc)
    run = EmptyWindows(windows=3999, step=1.0, window_start=101.0, window_end=4100.0)
    assert empty_windows_line(run) == "(3999 empty windows of 1 s from 101 s to 4100 s)"
    on_the_wall = msgspec.structs.replace(
        run, wall_start=start, wall_end=start + timedelta(seconds=3999)
    )
    assert empty_windows_line(on_the_wall) == (
        "(3999 empty windows of 1 s from 2026-11-29 10:00:01 to 11:06:40 UTC)"
    )
    next_day = msgspec.structs.replace(on_the_wall, wall_end=start + timedelta(days=1))
    assert empty_windows_line(next_day).endswith("to 2026-11-30 10:00:01 UTC)")
