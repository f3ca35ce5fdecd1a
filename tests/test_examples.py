"""The examples: an async service embedding a pipeline (started, queried over
HTTP on loopback, stopped), and a third-party sink found through the
``flowtrace.sinks`` entry-point group."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.to_thread
import pytest
from workloads import run

from flowtrace import ManualClock, Pipeline, Source, SourceContext
from flowtrace.recorder import RecordingSource
from flowtrace.sources.reads import ReadLatency
from flowtrace.stages import Emit
from flowtrace.testing import CollectSink

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


service_module = load_example("latency_service")


def latency(n: int, micros: int) -> ReadLatency:
    return ReadLatency(ts=n, lat_ns=micros * 1000, ret=1, pid=7, tid=7, comm="cat")


class Fed(Source[ReadLatency]):
    """Stands in for read_latencies(): emits what the test feeds it."""

    event = ReadLatency
    name = "reads"

    def __init__(self) -> None:
        self.sender, self.receiver = anyio.create_memory_object_stream[list[ReadLatency]](10)

    async def run(self, ctx: SourceContext, emit: Emit[ReadLatency]) -> None:
        ctx.ready()
        async with self.receiver:
            while not ctx.stop_requested:
                with anyio.move_on_after(0.05):
                    try:
                        batch = await self.receiver.receive()
                    except anyio.EndOfStream:
                        return
                    ctx.stats.received += len(batch)
                    await emit(batch)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def buckets(url: str) -> dict[tuple[int, int], int]:
    status, body = get(url + "histogram")
    assert status == 200
    record = json.loads(body)
    assert (record["v"], record["type"]) == (1, "histogram")
    return {(b["low"], b["high"]): b["count"] for b in record["data"]["buckets"] if b["count"]}


async def wait_for(url: str, total: int) -> dict[tuple[int, int], int]:
    """Query until the histogram holds ``total`` events (windows close each second)."""
    with anyio.fail_after(20):
        while True:
            seen = await anyio.to_thread.run_sync(buckets, url)
            if sum(seen.values()) >= total:
                return seen
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_service_serves_the_live_histogram_and_stops_cleanly() -> None:
    source = Fed()
    pipeline = service_module.latency_pipeline(every=0.2).replace(source=source)
    service = service_module.LatencyService(pipeline, port=0)
    async with anyio.create_task_group() as tg:
        url = await tg.start(service.run)
        assert url.startswith("http://127.0.0.1:")
        await source.sender.send([latency(i, 3) for i in range(5)])
        assert await wait_for(url, 5) == {(2, 3): 5}
        await source.sender.send([latency(i, 100) for i in range(2)])
        assert await wait_for(url, 7) == {(2, 3): 5, (64, 127): 2}
        status, text = await anyio.to_thread.run_sync(get, url)
        assert status == 200 and b"usecs" in text and b"64 -> 127" in text
        status, stats = await anyio.to_thread.run_sync(get, url + "stats")
        stages = {s["name"]: s for s in json.loads(stats)["data"]["stages"]}
        assert stages["reads"]["received"] == 7
        status, _ = await anyio.to_thread.run_sync(get, url + "nope")
        assert status == 404
        service.stop()
        source.sender.close()
    assert service.error is None
    assert pipeline.stats.stage("reads").received == 7
    with pytest.raises(urllib.error.URLError):
        get(url)


def record_latencies(path: Path, micros: list[int]) -> None:
    class Recorded(Source[ReadLatency]):
        event = ReadLatency
        name = "reads"

        async def run(self, ctx: SourceContext, emit: Emit[ReadLatency]) -> None:
            ctx.ready()
            assert isinstance(ctx.clock, ManualClock)
            for n, us in enumerate(micros):
                ctx.clock.advance(0.25)
                ctx.stats.received += 1
                await emit([latency(n, us)])

    pipeline = Pipeline(Recorded(), [], CollectSink(), clock=ManualClock(50.0))
    anyio.run(pipeline.replace(source=RecordingSource(pipeline.source, path)).run)


def test_service_from_a_recording_without_root(tmp_path: Path) -> None:
    recording = tmp_path / "reads.rec"
    record_latencies(recording, [1, 3, 3, 9, 9, 9, 200])
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "latency_service.py"),
            "--port",
            "0",
            "--replay",
            recording,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "serving http://127.0.0.1:" in line, line
    url = line.split()[-1]
    deadline = time.monotonic() + 20
    while sum(buckets(url).values()) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert buckets(url) == {(0, 1): 1, (2, 3): 2, (8, 15): 3, (128, 255): 1}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "latency_service: reads: 7 in, 7 out" in err
    assert "Traceback" not in err


def test_service_with_a_bad_recording_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rec"
    bad.write_text("nonsense\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "latency_service.py"), "--replay", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "bad.rec:1: not a flowtrace record" in result.stderr


@pytest.mark.kernel
def test_service_on_the_kernel_counts_real_reads() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "latency_service.py"), "--port", "0", "--every", "0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "serving http://127.0.0.1:" in line, line
    url = line.split()[-1]
    run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=2000"])  # 2000 read(2) calls
    deadline = time.monotonic() + 20
    while sum(buckets(url).values()) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(buckets(url).values()) >= 2000
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


TALLY_PIPELINE = """
from flowtrace.records import Histogram
from flowtrace.sources.syscalls import SyncCall
from flowtrace.testing import CollectSink, ListSource

items = [SyncCall(i, i, "sync") for i in range(5)]
items.append(Histogram(field="x", unit="usecs", scale="log2", buckets=[]))
pipeline = ListSource(items, batch_size=2) | CollectSink()
"""


def installed_plugin(site: Path) -> dict[str, str]:
    """What ``pip install examples/thirdparty_sink`` leaves for importlib.metadata:
    a dist-info with the entry point, and the package on the path."""
    info = site / "flowtrace_tally-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowtrace-tally\nVersion: 0.1.0\n")
    pyproject = (EXAMPLES / "thirdparty_sink" / "pyproject.toml").read_text()
    entry = pyproject.split('[project.entry-points."flowtrace.sinks"]\n')[1].split("\n")[0]
    name, _, target = entry.partition("=")
    target = target.strip().strip('"')
    (info / "entry_points.txt").write_text(f"[flowtrace.sinks]\n{name.strip()} = {target}\n")
    path = f"{site}:{EXAMPLES / 'thirdparty_sink'}"
    return {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}


def test_third_party_sink_from_the_command_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = installed_plugin(site)
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text(TALLY_PIPELINE)
    out = tmp_path / "tally.json"
    ok = subprocess.run(
        [FLOWTRACE, "run", "--sink", f"tally:{out}", str(pipeline_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    tally: dict[str, Any] = json.loads(out.read_text())
    assert tally == {"counts": {"event/SyncCall": 5, "histogram/Histogram": 1}, "total": 6}
    assert "flowtrace: tally: 6 in, 6 out" in ok.stderr
    missing = subprocess.run(
        [FLOWTRACE, "run", "--sink", "tally:", str(pipeline_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert missing.returncode == 2
    assert (
        missing.stderr == "flowtrace: error: --sink tally:: tally needs a path: --sink tally:PATH\n"
    )
    unknown = subprocess.run(
        [FLOWTRACE, "run", "--sink", "nope", str(pipeline_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "known sinks: " in unknown.stderr and "tally" in unknown.stderr
