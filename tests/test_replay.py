"""Recording a source and replaying it without a kernel: the same events in
the same batches on the same (virtual) timeline, and one-line errors with the
line number for every kind of bad recording."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from flowtrace import ManualClock, Operator, Pipeline, Run, SourceContext, StageError
from flowtrace.recorder import RecordingSource
from flowtrace.recording import MAX_LINE, MAX_START, MAX_WALL_START, _RecordingFile
from flowtrace.replay import RecordingReader, ReplayError, replay
from flowtrace.schema import RecordingEnd
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.sources.syscalls import SyncCall
from flowtrace.stages import Emit, Source
from flowtrace.testing import CollectSink

FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))


class Timed(Source[SyncCall]):
    """A stand-in for a kernel source: batches at known times of its clock.

    With a ManualClock it advances the clock by ``step`` before each batch,
    so a "live" run has an exact, known timeline.
    """

    def event_type(self) -> type[SyncCall]:

        return SyncCall

    name = "sync"

    def __init__(self, batches: int, per_batch: int, step: float = 0.3, lost: int = 0) -> None:
        self.batches, self.per_batch, self.step, self.lost = batches, per_batch, step, lost

    async def run(self, ctx: SourceContext, emit: Emit[SyncCall]) -> None:
        ctx.ready()
        n = 0
        for _ in range(self.batches):
            clock = ctx.clock
            if isinstance(clock, ManualClock):
                clock.advance(self.step)
            else:
                await ctx.sleep(self.step)  # the source's own pacing
            batch = [SyncCall(n + i, 1000 + (n + i) % 7, "sync") for i in range(self.per_batch)]
            n += len(batch)
            ctx.stats.received += len(batch)
            await emit(batch)
        ctx.stats.lost = self.lost
        if isinstance(ctx.clock, ManualClock):
            ctx.clock.advance(self.step)


class PerSecond(Operator[SyncCall, tuple[float, int]]):
    """Counts events per clock second (ticks), and notes the clock at each batch."""

    tick_interval = 1.0

    def __init__(self) -> None:
        self.count = 0
        self.batch_times: list[float] = []

    def process(self, batch: list[SyncCall]) -> Sequence[tuple[float, int]]:
        self.batch_times.append(self.ctx.clock.now())
        self.count += len(batch)
        return ()

    def tick(self) -> Sequence[tuple[float, int]]:
        out, self.count = self.count, 0
        return [(self.ctx.clock.now(), out)]

    def finish(self) -> Sequence[tuple[float, int]]:
        return [(self.ctx.clock.now(), self.count)]


class Pass(Operator[SyncCall, SyncCall]):
    def process(self, batch: list[SyncCall]) -> Sequence[SyncCall]:
        return batch


def build(source: Source[SyncCall], clock: ManualClock | None = None) -> Pipeline:
    """Three operators before the timed one, so a batch takes several steps
    of the event loop to reach it."""
    return Pipeline(source, [Pass(), Pass(), Pass(), PerSecond()], CollectSink(), clock=clock)


def recorded_times(path: Path) -> list[float]:
    ats = [json.loads(line)["at"] for line in path.read_text().splitlines()[1:-1]]
    return sorted(set(ats))


@pytest.mark.anyio
async def test_replay_reproduces_events_batches_and_counters(tmp_path: Path) -> None:
    recording = tmp_path / "sync.rec"
    live = Pipeline(Timed(batches=12, per_batch=5, step=0.01, lost=3), [], CollectSink())
    live_run = Run(live.replace(source=RecordingSource(live.source, recording)))
    await live_run.run()
    again = replay(Pipeline(Timed(0, 0), [], CollectSink()), recording)
    assert isinstance(again.clock, ManualClock)
    replayed = Run(again)
    await replayed.run()
    live_sink, replay_sink = live_run.sink, replayed.sink
    assert isinstance(live_sink, CollectSink) and isinstance(replay_sink, CollectSink)
    assert replay_sink.items == live_sink.items and len(live_sink.items) == 60
    assert replay_sink.batches == live_sink.batches == 12
    assert [s.describe() for s in replayed.stats.stages] == [
        "sync: 60 in, 60 out, 3 lost before delivery",
        "collect: 60 in, 60 out",
    ]
    assert len(recorded_times(recording)) == 12


@pytest.mark.anyio
async def test_virtual_clock_follows_the_recorded_timeline(tmp_path: Path) -> None:
    recording = tmp_path / "sync.rec"
    live = build(Timed(batches=25, per_batch=3, step=0.1))
    await live.replace(source=RecordingSource(live.source, recording)).run()
    times = recorded_times(recording)
    reader = RecordingReader(recording, SyncCall)
    reader.check()
    outputs: list[list[Any]] = []
    for _ in range(2):
        again = Run(replay(build(Timed(0, 0)), recording))
        assert again.clock.now() == reader.header.start
        await again.run()
        op = again.operators[-1]
        assert isinstance(op, PerSecond)
        assert op.batch_times == times, "each batch is processed at its recorded time"
        assert again.clock.now() == reader.end_at
        assert isinstance(again.sink, CollectSink)
        outputs.append(list(again.sink.items))
        again.sink.items.clear()
    assert outputs[0] == outputs[1], "a replay is deterministic"
    ticks = outputs[0]
    # a tick is due each whole second after the start; the virtual clock
    # reaches it at the first recorded batch time at or after it
    start = reader.header.start
    due = [start + s for s in range(1, int(reader.end_at - start) + 1)]
    expected = [min(t for t in [*times, reader.end_at] if t >= d) for d in due]
    assert [t for t, _ in ticks] == [*expected, reader.end_at]
    assert sum(n for _, n in ticks) == 75


@pytest.mark.anyio
async def test_realtime_replay_takes_the_recorded_time(tmp_path: Path) -> None:
    recording = tmp_path / "sync.rec"
    live = build(Timed(batches=4, per_batch=2, step=0.1))
    await live.replace(source=RecordingSource(live.source, recording)).run()
    reader = RecordingReader(recording, SyncCall)
    assert reader.check().events == 8
    started = time.monotonic()
    again = replay(build(Timed(0, 0)), recording, realtime=True)
    assert not isinstance(again.clock, ManualClock)
    await again.run()
    assert time.monotonic() - started >= reader.end_at - reader.header.start - 0.01
    assert sum(n for _, n in again.sink.items) == 8  # type: ignore[attr-defined]


async def record(path: Path, events: int = 6) -> list[str]:
    """A valid recording, written by the recorder itself; returns its lines."""
    live = build(Timed(batches=3, per_batch=events // 3), ManualClock(10.0))
    await live.replace(source=RecordingSource(live.source, path)).run()
    text = await anyio.Path(path).read_text()
    return text.splitlines(keepends=True)


def write_recording(path: Path, events: int = 6) -> list[str]:
    return anyio.run(record, path, events)


def edit(lines: list[str], index: int, change: dict[str, Any]) -> list[str]:
    record = json.loads(lines[index])
    for key, value in change.items():
        target = record
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    return [*lines[:index], json.dumps(record) + "\n", *lines[index + 1 :]]


def header_fields(fields: list[list[str]]) -> dict[str, Any]:
    return {"data.fields": fields}


FIX = "; record it again with flowtrace run --record"
OTHER = "; replay it into the pipeline that recorded it, or record this one"
AT_4 = 10.0 + 0.3 + 0.3  # the arrival time of line 4 (the ManualClock's steps), as Python spells it

# (case, change to the good recording's lines, the whole message after the path)
BAD: list[tuple[str, Any, str]] = [
    ("empty", lambda ls: [], f":1: empty file, not a recording{FIX}"),
    (
        "not json",
        lambda ls: ["hello\n", *ls[1:]],
        f":1: not a flowtrace record: JSON is malformed: invalid character (byte 0){FIX}",
    ),
    (
        "binary",
        lambda ls: ["\x00\xff\xfe\n"],
        f":1: not a flowtrace record: JSON is malformed: invalid character (byte 0){FIX}",
    ),
    (
        "version",
        lambda ls: edit(ls, 3, {"v": 2}),
        ":4: schema version 2, this flowtrace reads version 1;"
        " replay it with the flowtrace that wrote it, or record it again",
    ),
    (
        "outputs",
        lambda ls: ls[1:],
        ":1: starts with a record of type 'event', not a recording header"
        f" (files from --sink ndjson hold outputs, not source events){FIX}",
    ),
    (
        "header",
        lambda ls: edit(ls, 0, {"data.start": "soon"}),
        f":1: bad recording header: Expected `float`, got `str` - at `$.start`{FIX}",
    ),
    (
        "other event",
        lambda ls: edit(ls, 0, {"data.event": "Clone"}),
        f":1: recording holds Clone events, the pipeline's source emits SyncCall{OTHER}",
    ),
    (
        "wall clock",
        lambda ls: edit(ls, 0, {"data.wall_start": -1.0}),
        f":1: wall_start -1.0 is not a time in Unix seconds between 1970 and 9999{FIX}",
    ),
    (
        "layout",
        lambda ls: edit(ls, 0, header_fields([["ts", "u32"], ["pid", "u32"], ["comm", "c"]])),
        f":1: recorded SyncCall fields differ: (ts u32, pid u32, comm c){OTHER}",
    ),
    (
        "extra field",
        lambda ls: edit(ls, 2, {"data.cpu": 1}),
        f":3: bad SyncCall event: Object contains unknown field `cpu`{FIX}",
    ),
    (
        "missing field",
        lambda ls: edit(ls, 2, {"data": {"ts": 1}}),
        f":3: bad SyncCall event: Object missing required field `pid`{FIX}",
    ),
    (
        "type",
        lambda ls: edit(ls, 2, {"data.pid": "7"}),
        f":3: bad SyncCall event: Expected `int`, got `str` - at `$.pid`{FIX}",
    ),
    (
        "negative",
        lambda ls: edit(ls, 2, {"data.pid": -1}),
        f":3: bad SyncCall event: Expected `int` >= 0 - at `$.pid`{FIX}",
    ),
    (
        "u32 range",
        lambda ls: edit(ls, 2, {"data.pid": 2**32}),
        f":3: bad SyncCall event: Expected `int` <= 4294967295 - at `$.pid`{FIX}",
    ),
    (
        "u64 range",
        lambda ls: edit(ls, 2, {"data.ts": 2**64}),
        f":3: ts 18446744073709551616 does not fit its kernel type{FIX}",
    ),
    (
        "comm",
        lambda ls: edit(ls, 2, {"data.comm": "x" * 17}),
        f":3: bad SyncCall event: Expected `str` of length <= 16 - at `$.comm`{FIX}",
    ),
    (
        "backwards",
        lambda ls: edit(ls, 4, {"at": 0.5}),
        f":5: arrival time 0.5 missing or before {AT_4}{FIX}",
    ),
    (
        "no time",
        lambda ls: edit(ls, 4, {"at": None}),
        f":5: arrival time None missing or before {AT_4}{FIX}",
    ),
    (
        "unknown",
        lambda ls: edit(ls, 2, {"type": "histogram"}),
        f":3: unexpected histogram record 'SyncCall'{FIX}",
    ),
    (
        "foreign name",
        lambda ls: edit(ls, 2, {"name": "Clone"}),
        f":3: unexpected event record 'Clone'{FIX}",
    ),
    ("after end", lambda ls: [*ls, ls[2]], f":9: records after the end record{FIX}"),
    (
        "count",
        lambda ls: edit(ls, 7, {"data.events": 9}),
        f":8: end record counts 9 events, the recording holds 6{FIX}",
    ),
    (
        "end",
        lambda ls: edit(ls, 7, {"data.events": "six"}),
        f":8: bad end record: Expected `int`, got `str` - at `$.events`{FIX}",
    ),
    ("blank", lambda ls: [*ls[:3], "\n", *ls[3:]], f":4: empty line{FIX}"),
    (
        "huge",
        lambda ls: [ls[0], "[" * (1 << 20) + "\n"],
        f":2: line longer than 1048576 bytes, not a flowtrace record{FIX}",
    ),
]


@pytest.mark.parametrize(("change", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_recordings_name_line_problem_and_fix(
    tmp_path: Path, change: Any, message: str
) -> None:
    good = tmp_path / "good.rec"
    lines = write_recording(good)
    assert len(lines) == 8
    bad = tmp_path / "bad.rec"
    bad.write_text("".join(change(lines)), errors="surrogateescape")
    with pytest.raises(ReplayError) as info:
        RecordingReader(bad, SyncCall).check()
    assert str(info.value) == f"{bad}{message}"


TOO_LONG = f"line longer than {MAX_LINE} bytes, not a flowtrace record"


def padded(line: str, size: int, newline: bool = True) -> str:
    """``line`` (a JSON record) with spaces before its last brace: ``size``
    bytes in all, with or without its newline."""
    record = line.rstrip("\n")
    body = size - len(record) - newline
    return record[:-1] + " " * body + "}" + "\n" * newline


def test_a_line_of_max_line_bytes_is_read_one_more_is_refused(tmp_path: Path) -> None:
    lines = write_recording(tmp_path / "good.rec")
    expected = list(RecordingReader(tmp_path / "good.rec", SyncCall))
    longest = tmp_path / "longest.rec"
    longest.write_text("".join([*lines[:2], padded(lines[2], MAX_LINE), *lines[3:]]))
    reader = RecordingReader(longest, SyncCall)
    assert list(reader) == expected
    assert (reader.events, reader.cut_at) == (6, None)
    over = tmp_path / "over.rec"
    over.write_text("".join([*lines[:2], padded(lines[2], MAX_LINE + 1), *lines[3:]]))
    with pytest.raises(ReplayError) as info:
        RecordingReader(over, SyncCall).check()
    assert str(info.value) == f"{over}:3: {TOO_LONG}{FIX}"


def test_a_last_line_without_newline_is_cut_up_to_max_line_bytes(tmp_path: Path) -> None:
    """A recording killed mid-line ends in a line without newline: up to
    MAX_LINE bytes that is a cut record (the recording stops before it),
    longer it is a line too long, whatever follows."""
    lines = write_recording(tmp_path / "good.rec")[:-1]  # killed before the end record
    cut = tmp_path / "cut.rec"
    cut.write_text("".join([*lines[:-1], padded(lines[-1], MAX_LINE, newline=False)]))
    reader = RecordingReader(cut, SyncCall)
    assert [e.ts for _, batch in reader for e in batch] == [0, 1, 2, 3, 4]
    assert (reader.events, reader.cut_at) == (5, 7)
    assert reader.end == RecordingEnd(events=5, received=5, lost=0)  # what was written stands
    over = tmp_path / "over.rec"
    over.write_text("".join([*lines[:-1], padded(lines[-1], MAX_LINE + 1, newline=False)]))
    with pytest.raises(ReplayError) as info:
        RecordingReader(over, SyncCall).check()
    assert str(info.value) == f"{over}:7: {TOO_LONG}{FIX}"



def test_a_recording_killed_after_its_header_holds_no_events(tmp_path: Path) -> None:
    header_only = tmp_path / "header.rec"
    header_only.write_text(write_recording(tmp_path / "good.rec")[0])
    reader = RecordingReader(header_only, SyncCall)
    assert list(reader) == []
    assert (reader.cut_at, reader.end) == (2, RecordingEnd(events=0, received=0, lost=0))


class Reading(msgspec.Struct, frozen=True):
    """An event type that is a plain msgspec Struct, not a kernel record."""

    sensor: str
    value: float


class Readings(Source[Reading]):
    def event_type(self) -> type[Reading]:
        return Reading

    async def run(self, ctx: SourceContext, emit: Emit[Reading]) -> None:
        ctx.ready()
        batch = [Reading("a", 1.5), Reading("b", -2.0)]
        ctx.stats.received += len(batch)
        await emit(batch)


@pytest.mark.anyio
async def test_a_plain_struct_records_and_replays_with_its_own_field_types(
    tmp_path: Path,
) -> None:
    path = tmp_path / "readings.rec"
    await Pipeline(RecordingSource(Readings(), path), [], CollectSink[Reading]()).run()
    reader = RecordingReader(path, Reading)
    assert [e for _, batch in reader for e in batch] == [Reading("a", 1.5), Reading("b", -2.0)]
    lines = path.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.rec"
    bad.write_text("".join(edit(lines, 1, {"data.unit": "C"})))
    with pytest.raises(ReplayError) as info:
        RecordingReader(bad, Reading).check()
    unknown = "bad Reading event: Object contains unknown field `unit`"
    assert str(info.value) == f"{bad}:2: {unknown}{FIX}"


def test_a_u64_field_holds_its_largest_value(tmp_path: Path) -> None:
    lines = write_recording(tmp_path / "good.rec")
    largest = tmp_path / "largest.rec"
    largest.write_text("".join(edit(lines, 2, {"data.ts": 2**64 - 1})))
    assert [e.ts for _, batch in RecordingReader(largest, SyncCall) for e in batch][1] == 2**64 - 1


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"data.wall_start": 0.0}, None),
        ({"data.wall_start": MAX_WALL_START}, None),
        (
            {"data.wall_start": math.nextafter(MAX_WALL_START, math.inf)},
            f"wall_start {math.nextafter(MAX_WALL_START, math.inf)} is not a time in Unix"
            " seconds between 1970 and 9999",
        ),
        ({"data.start": -MAX_START}, None),
        (
            {"data.start": math.nextafter(-MAX_START, -math.inf)},
            f"start time {math.nextafter(-MAX_START, -math.inf)} is not a finite number of"
            " seconds within 1e12 of 0",
        ),
    ],
)
def test_header_times_at_their_bounds(
    tmp_path: Path, change: dict[str, Any], problem: str | None
) -> None:
    lines = write_recording(tmp_path / "good.rec")
    edited = tmp_path / "edited.rec"
    header = edit(lines, 0, change)[0]
    edited.write_text(header + "".join(lines[1:]))
    if problem is None:
        assert RecordingReader(edited, SyncCall).header.start == json.loads(header)["data"]["start"]
        return
    with pytest.raises(ReplayError) as info:
        RecordingReader(edited, SyncCall)
    assert str(info.value) == f"{edited}:1: {problem}{FIX}"


def test_event_lines_as_flowtrace_writes_them_are_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader's quick path: a well-formed event line of a one-type
    recording is decoded once; the checks that name a problem read only the
    header and the end record."""
    good = tmp_path / "good.rec"
    write_recording(good)
    checked: list[int] = []
    check_line = _RecordingFile._line

    def spy(self: _RecordingFile, lineno: int, raw: bytes) -> Any:
        checked.append(lineno)
        return check_line(self, lineno, raw)

    monkeypatch.setattr(_RecordingFile, "_line", spy)
    assert RecordingReader(good, SyncCall).check().events == 6
    assert checked == [1, 8]


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"cannot read recording .*: No such file"):
        RecordingReader(tmp_path / "nope.rec", SyncCall)
    with pytest.raises(ReplayError, match="not a regular file"):
        RecordingReader(tmp_path, SyncCall)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ReplayError, match="not a regular file"):  # opening it would block
        RecordingReader(fifo, SyncCall)


@pytest.mark.parametrize(
    ("keep", "stops_at"),
    [
        (lambda ls: ls[:-1], 8),  # killed before the end record
        (lambda ls: [*ls[:-1], ls[-1][:20]], 8),  # killed while writing it
        (lambda ls: [*ls[:4], ls[4][:30]], 5),  # killed while writing an event
    ],
)
@pytest.mark.anyio
async def test_a_recording_cut_short_replays_what_was_written(
    tmp_path: Path, keep: Callable[[list[str]], list[str]], stops_at: int
) -> None:
    lines = keep(await record(tmp_path / "good.rec", 6))
    cut = tmp_path / "cut.rec"
    cut.write_text("".join(lines))
    run = Run(replay(Pipeline(Timed(0, 0), [], CollectSink()), cut))
    await run.run()
    assert isinstance(run.sink, CollectSink)
    whole_events = sum(1 for line in lines if '"type":"event"' in line and line.endswith("\n"))
    assert len(run.sink.items) == whole_events == stops_at - 2
    assert any(f"stops at line {stops_at} (cut short" in a for a in run.stats.attached)


@pytest.mark.anyio
async def test_bad_line_mid_replay_keeps_what_came_before(tmp_path: Path) -> None:
    good = tmp_path / "good.rec"
    lines = await record(good, events=30)
    bad = tmp_path / "bad.rec"
    bad.write_text("".join(lines[:25]) + "garbage\n" + "".join(lines[25:]))
    out = tmp_path / "out.ndjson"
    pipeline = replay(Pipeline(Timed(0, 0), [], NdjsonSink(out)), bad, check=False)
    with pytest.raises(StageError, match=r"bad\.rec:26: not a flowtrace record"):
        await pipeline.run()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[-1]["type"] == "summary"
    events = [r["data"]["ts"] for r in written if r["type"] == "event"]
    assert events == list(range(len(events))) and len(events) >= 20


def test_cli_record_then_replay_and_errors(tmp_path: Path) -> None:
    recording = tmp_path / "rec.ndjson"
    write_recording(recording)
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text(
        "from flowtrace.sources.syscalls import sync_calls\n"
        "from flowtrace.testing import CollectSink\n"
        "pipeline = sync_calls() | CollectSink()\n"
    )
    out = tmp_path / "out.ndjson"
    ok = subprocess.run(
        [
            FLOWTRACE,
            "run",
            "--replay",
            str(recording),
            "--sink",
            f"ndjson:{out}",
            str(pipeline_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "flowtrace: sync: 6 in, 6 out" in ok.stderr
    assert sum(1 for line in out.read_text().splitlines() if '"type":"event"' in line) == 6
    recording.write_text(recording.read_text().replace('"pid":1001', '"pid":"x"', 1))
    for args in (
        ["--replay", str(recording)],
        ["--replay", str(recording), "--record", str(recording)],
        ["--realtime"],
        ["--record", str(tmp_path / "no" / "such.rec")],
    ):
        bad = subprocess.run(
            [FLOWTRACE, "run", *args, str(pipeline_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2, (args, bad.stderr)
        assert bad.stderr.startswith("flowtrace: error: ") and bad.stderr.count("\n") == 1
        assert "Traceback" not in bad.stderr
