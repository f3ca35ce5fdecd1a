"""The NDJSON sink: schema, reports, rotation, and whole lines with exact
counts on every way a run can end (end of input, a failing stage, a full
disk, SIGTERM and SIGINT under the CLI)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowtrace import (
    Operator,
    Overflow,
    Pipeline,
    Run,
    SourceContext,
    StageError,
    linefile,
    recorder,
)
from flowtrace.records import Bucket, CountRow, CountTable, Histogram, WindowResult
from flowtrace.schema import RecordEncoder
from flowtrace.sinks import ndjson as ndjson_module
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.sinkspec import SinkSpecError, sink_from_spec, with_sinks
from flowtrace.sources.syscalls import SyncCall
from flowtrace.stages import Emit
from flowtrace.testing import CollectSink, ListSource

FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))


def lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the file ends on a whole line"
    return [json.loads(line) for line in data.splitlines()]


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == kind]


HISTOGRAM = Histogram(
    field="latency",
    unit="usecs",
    scale="log2",
    buckets=[Bucket(0, 1, 3), Bucket(2, 3, 0), Bucket(4, 7, 9)],
    key={"comm": "dd", "pid": 7},
    window_start=1.0,
    window_end=2.0,
)
TABLE = CountTable(rows=[CountRow({"comm": "sh", "cpu": 1}, 5)], others=2)
WINDOW = WindowResult(aggregate="count", value=12, key={"pid": 3})


@pytest.mark.anyio
async def test_every_record_says_its_type_and_stays_structured(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    items: list[Any] = [SyncCall(5, 6, "sync"), HISTOGRAM, TABLE, WINDOW, 42]
    await (ListSource(items, batch_size=2) | NdjsonSink(out)).run()
    records = lines(out)
    assert all(r["v"] == 1 for r in records)
    assert [(r["type"], r["name"]) for r in records[:-1]] == [
        ("event", "SyncCall"),
        ("histogram", "Histogram"),
        ("count_table", "CountTable"),
        ("window", "WindowResult"),
        ("value", "int"),
    ]
    assert records[0]["data"] == {"ts": 5, "pid": 6, "comm": "sync"}
    hist = records[1]["data"]
    assert hist["buckets"] == [
        {"low": 0, "high": 1, "count": 3},
        {"low": 2, "high": 3, "count": 0},
        {"low": 4, "high": 7, "count": 9},
    ]
    assert hist["key"] == {"comm": "dd", "pid": 7}
    assert (hist["window_start"], hist["window_end"], hist["scale"]) == (1.0, 2.0, "log2")
    assert records[2]["data"]["rows"] == [{"key": {"comm": "sh", "cpu": 1}, "count": 5}]
    assert records[3]["data"]["value"] == 12
    summary = records[-1]
    assert summary["type"] == "summary"
    stages = [(s["name"], s["received"]) for s in summary["data"]["stages"]]
    assert stages == [("list", 5), ("ndjson", 5)], "the whole run's counters"


class Reporting(ListSource[int]):
    async def run(self, ctx: SourceContext, emit: Emit[int]) -> None:
        ctx.report("attached nothing at all")
        await super().run(ctx, emit)


class Slow(CollectSink[int]):
    async def write(self, batch: list[int]) -> None:
        await anyio.sleep(0.001)  # the sink's own slowness, not a wait for anything
        await super().write(batch)


@pytest.mark.anyio
async def test_attach_loss_and_summary_of_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    collect = Slow()
    base = Pipeline(Reporting(range(3000), batch_size=10), [], collect, capacity=1)
    pipeline = with_sinks(base.replace(overflow=Overflow.DROP), [NdjsonSink(out)])
    stats = await pipeline.run()
    records = lines(out)
    assert [r["data"]["message"] for r in of_type(records, "attach")] == [
        "list: attached nothing at all"
    ]
    dropped = stats.stage("list").dropped["overflow"]
    assert dropped > 0
    losses = of_type(records, "loss")
    assert losses, "drops were reported while running"
    totals = [r["data"]["dropped"] for r in losses]
    assert totals == sorted(totals) and totals[-1] <= dropped
    events = of_type(records, "value")
    assert len(events) == len(collect.items) == 3000 - dropped
    final = records[-1]["data"]
    assert final["dropped"] == dropped
    names = [s["name"] for s in final["stages"]]
    assert names == ["list", "sinks", "collect", "ndjson"]
    assert final["stages"][-1]["received"] == len(events)


@pytest.mark.anyio
async def test_rotation_keeps_whole_lines_within_the_size(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    sink = NdjsonSink(out, max_bytes=2000, backups=3)
    await (ListSource(range(400), batch_size=37) | sink).run()
    files = [out.with_name(f"out.ndjson.{n}") for n in (3, 2, 1)] + [out]
    assert not out.with_name("out.ndjson.4").exists()
    records = []
    for f in files:
        assert f.stat().st_size <= 2000
        records += lines(f)
    values = [r["data"] for r in of_type(records, "value")]
    assert values == list(range(values[0], 400)), "the newest files hold the newest lines"
    assert values[0] > 0, "the oldest file was deleted"
    assert records[-1]["type"] == "summary"


@pytest.mark.anyio
async def test_rotation_fills_each_file_and_a_long_line_gets_a_file_of_its_own(
    tmp_path: Path,
) -> None:
    """Room for three lines: a second batch tops the file up before it
    rotates; a line longer than the size is written alone, in a file of
    its own."""
    out = tmp_path / "out.ndjson"
    line = len(RecordEncoder().json_line(10))
    sink = NdjsonSink(out, max_bytes=3 * line, backups=5, reports=False)
    long = "x" * (4 * line)
    await (ListSource([10, 11, 12, 13, long, 14], batch_size=2) | sink).run()
    files = [out.with_name(f"out.ndjson.{n}") for n in (3, 2, 1)] + [out]
    assert [[r["data"] for r in lines(f)] for f in files] == [[10, 11, 12], [13], [long], [14]]
    assert not out.with_name("out.ndjson.4").exists()
    assert NdjsonSink(out).backups == 5


class Exploding(Operator[int, int]):
    name = "exploding"

    def __init__(self) -> None:
        self.seen = 0

    def process(self, batch: list[int]) -> Sequence[int]:
        self.seen += len(batch)
        if self.seen > 500:
            raise ValueError("boom")
        return batch


@pytest.mark.anyio
async def test_failing_stage_leaves_whole_lines_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    run = Run(ListSource(range(1000), batch_size=10) | Exploding() | NdjsonSink(out))
    with pytest.raises(StageError, match="exploding"):
        await run.run()
    records = lines(out)
    assert records[-1]["type"] == "summary"
    written = [r["data"] for r in of_type(records, "value")]
    assert written == list(range(len(written)))
    assert len(written) == run.stats.stage("ndjson").received


@pytest.mark.anyio
async def test_full_disk_counts_the_batch_and_fails() -> None:
    run = Run(ListSource(range(50), batch_size=50) | NdjsonSink("/dev/full", reports=False))
    with pytest.raises(StageError, match="No space left on device"):
        await run.run()
    assert run.stats.stage("ndjson").dropped == {"write_error": 50}


@pytest.mark.anyio
async def test_partial_write_counts_only_the_events_not_in_the_file(tmp_path: Path) -> None:
    """The batch's first four lines fill the file to ``max_bytes``; rotating
    for the rest fails (a directory where the backup goes): the four stay,
    the other six are counted as not written."""
    out = tmp_path / "out.ndjson"
    (tmp_path / "out.ndjson.1").mkdir()
    (tmp_path / "out.ndjson.1" / "keep").touch()  # not removable as a backup file
    line = len(RecordEncoder().json_line(0))
    sink = NdjsonSink(out, max_bytes=4 * line, backups=1, reports=False)
    run = Run(ListSource(range(10), batch_size=10) | sink)
    with pytest.raises(StageError, match="Is a directory"):
        await run.run()
    assert [r["data"] for r in lines(out)] == [0, 1, 2, 3]
    assert run.stats.stage("ndjson").dropped == {"write_error": 6}


@pytest.mark.anyio
async def test_failing_report_write_counts_the_batch() -> None:
    """The attach record due before the first batch cannot be written: the
    batch is counted as not written, like a failing batch write."""
    sink = NdjsonSink("/dev/full")
    run = Run(Pipeline(Reporting(range(100), batch_size=100), [], sink))
    with pytest.raises(StageError, match="No space left on device"):
        await run.run()
    stats = run.stats.stage("ndjson")
    assert stats.dropped == {"write_error": 100}
    assert stats.received == stats.emitted + stats.dropped_total


@pytest.mark.anyio
async def test_a_fifo_without_a_reader_is_waited_for_and_reported_once(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    pipeline = Pipeline(ListSource(range(5)), [], NdjsonSink(fifo, reports=False))
    waiting = f"ndjson: waiting for a reader of the FIFO {fifo}"
    async with anyio.create_task_group() as tg:
        run = Run(pipeline)
        tg.start_soon(run.run)
        with anyio.fail_after(10):
            while waiting not in run.stats.attached:  # noqa: ASYNC110 - polling a list
                await anyio.sleep(0.01)  # poll interval of this bounded wait
        await anyio.sleep(0.3)  # the scenario: no reader for 0.3 s (the sink tries every 0.05 s)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(reader, 65536)
    finally:
        os.close(reader)
    assert [json.loads(line)["data"] for line in data.splitlines()] == [0, 1, 2, 3, 4]
    assert run.stats.attached == [waiting]


CUT_BACK = """
import os, resource, signal, sys
from flowtrace.linefile import write_lines
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
size = write_lines(fd, b"first\\n", 0)
try:
    write_lines(fd, b"0123456789abcdef\\n" * 100, size)  # 1700 bytes: cut at 1000
except OSError as exc:
    print(exc.errno)
size = write_lines(fd, b"last\\n", size)
print(size, os.fstat(fd).st_size)
"""


def test_a_partial_write_is_cut_back_to_the_last_whole_line(tmp_path: Path) -> None:
    """The one helper the NDJSON sink and the recorder write with: a write the
    file size limit cuts part way leaves the file on its last whole line, and
    the next write continues there (no hole)."""
    out = tmp_path / "out.ndjson"
    result = subprocess.run(
        [sys.executable, "-c", CUT_BACK, str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(errno.EFBIG), "11", "11"]
    assert out.read_bytes() == b"first\nlast\n"
    helper = linefile.write_lines
    assert vars(ndjson_module)["write_lines"] is vars(recorder)["write_lines"] is helper


SLOW_PIPELINE = """
from flowtrace.testing import CollectSink, ListSource
pipeline = ListSource(range(1_000_000), batch_size=7, interval=0.001) | CollectSink()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stream_every_line_parses_and_counts_match(tmp_path: Path, sig: int) -> None:
    pipeline_file = tmp_path / "slow.py"
    pipeline_file.write_text(SLOW_PIPELINE)
    out = tmp_path / "out.ndjson"
    proc = subprocess.Popen(
        [FLOWTRACE, "run", "--sink", f"ndjson:{out}", str(pipeline_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while (not out.exists() or out.stat().st_size < 5000) and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval of this bounded wait
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = lines(out)
    events = [r["data"] for r in of_type(records, "value")]
    assert len(events) > 100
    assert events == list(range(len(events)))
    summary = records[-1]
    assert summary["type"] == "summary"
    stages = {s["name"]: s for s in summary["data"]["stages"]}
    assert stages["list"]["emitted"] == stages["ndjson"]["received"] == len(events)
    assert stages["collect"]["received"] == len(events)
    assert f"ndjson: {len(events)} in, {len(events)} out" in err
    assert "Traceback" not in err


def test_stdout_sink_from_the_cli(tmp_path: Path) -> None:
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text(
        "from flowtrace.testing import CollectSink, ListSource\n"
        "pipeline = ListSource(range(25), batch_size=4) | CollectSink()\n"
    )
    result = subprocess.run(
        [FLOWTRACE, "run", "--sink", "ndjson:-", str(pipeline_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["data"] for r in of_type(records, "value")] == list(range(25))
    assert records[-1]["type"] == "summary"


def test_spec_options_reach_the_sink(tmp_path: Path) -> None:
    out = tmp_path / "x.ndjson"
    defaults = NdjsonSink.from_spec(str(out))
    assert (defaults.path, defaults.max_bytes, defaults.backups, defaults.reports) == (
        out,
        None,
        5,
        True,
    )
    assert defaults.name == "ndjson"
    sink = NdjsonSink.from_spec(f"{out},rotate=2M,backups=2,reports=no")
    assert (sink.path, sink.max_bytes, sink.backups, sink.reports) == (out, 2 << 20, 2, False)
    assert NdjsonSink.from_spec(f"{out},reports=yes").reports is True
    assert NdjsonSink.from_spec("-").path is None
    with pytest.raises(SinkSpecError, match=r"^bad value for reports: 'No': write yes or no$"):
        NdjsonSink.from_spec(f"{out},reports=No")
    with pytest.raises(ValueError, match=r"^max_bytes must be positive$"):
        NdjsonSink(out, max_bytes=0)
    assert NdjsonSink(out, max_bytes=1, backups=1).max_bytes == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ndjson:", "ndjson needs a path"),
        ("ndjson:-,rotate=1M", "standard output cannot be rotated"),
        ("ndjson:x.ndjson,rotate=lots", "bad size 'lots'"),
        ("ndjson:x.ndjson,rotate=0", "bad size '0'"),
        ("ndjson:x.ndjson,backups=0", "backups must be at least 1"),
        ("ndjson:x.ndjson,colour=red", "unknown option 'colour=red'"),
        ("ndjson:/no/such/dir/x.ndjson", "no directory '/no/such/dir'"),
        ("ndjson:/tmp", "'/tmp' is a directory: name a file in it, e.g. /tmp/out.ndjson"),
        ("ndjson:/tmp/,rotate=1M", "'/tmp/' is a directory"),
        ("nosuchsink:x", "no sink named 'nosuchsink'"),
        ("console", "cannot be built from the command line"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SinkSpecError, match=message):
        sink_from_spec(spec)


@pytest.mark.parametrize("spec", ["ndjson:", "ndjson:x,rotate=lots", "bogus", "ndjson:/tmp"])
def test_bad_spec_under_the_cli_exits_2_without_traceback(spec: str) -> None:
    result = subprocess.run(
        [FLOWTRACE, "run", "--sink", spec, "pipelines/sys_sync.py"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("flowtrace: error: --sink ")
    assert result.stderr.count("\n") == 1, result.stderr
