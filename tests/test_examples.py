"""The examples: an async service embedding a pipeline (started, queried over
HTTP on loopback, stopped), and a third-party sink found through the
``flowtrace.sinks`` entry-point group."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.to_thread
import pytest
from clirun import AS_NOBODY
from workloads import run

from flowtrace import FlowtraceError, ManualClock, Pipeline, Source, SourceContext, StageError
from flowtrace.recorder import RecordingSource
from flowtrace.records import Bucket, Histogram
from flowtrace.render import histogram_lines
from flowtrace.sources.reads import ReadLatency
from flowtrace.stages import Emit
from flowtrace.testing import CollectSink, ListSource

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

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

    def event_type(self) -> type[ReadLatency]:

        return ReadLatency

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
            await anyio.sleep(0.05)  # poll interval of this bounded wait


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
    assert service.pipeline_run.stats.stage("reads").received == 7
    with pytest.raises(urllib.error.URLError):
        get(url)


def record_latencies(path: Path, micros: list[int]) -> None:
    class Recorded(Source[ReadLatency]):
        def event_type(self) -> type[ReadLatency]:
            return ReadLatency

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
    import shutil
    import tempfile

    # as root, the service runs as nobody (as tests/test_replay_kernel.py does),
    # reading the recording from a folder nobody can enter
    unprivileged: dict[str, Any] = {}
    if os.geteuid() == 0:
        unprivileged = AS_NOBODY
        tmp_path = Path(tempfile.mkdtemp(prefix="flowtrace-service-"))
        tmp_path.chmod(0o755)
    try:
        recording = tmp_path / "reads.rec"
        record_latencies(recording, [1, 3, 3, 9, 9, 9, 200])
        recording.chmod(0o644)
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
            **unprivileged,
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line
        url = line.split()[-1]
        deadline = time.monotonic() + 20
        while sum(buckets(url).values()) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval of this bounded wait
        assert buckets(url) == {(0, 1): 1, (2, 3): 2, (8, 15): 3, (128, 255): 1}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "latency_service: reads: 7 in, 7 out" in err
        assert "Traceback" not in err
    finally:
        if unprivileged:
            shutil.rmtree(tmp_path)


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
        time.sleep(0.05)  # poll interval of this bounded wait
    assert sum(buckets(url).values()) >= 2000
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


async def closed_by_the_service(stream: anyio.abc.SocketStream) -> None:
    """Wait (bounded) until the service has handled the connection and
    closed its side, whatever it answered."""
    with anyio.fail_after(10):
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    await stream.aclose()


@pytest.mark.anyio
async def test_a_client_closing_without_a_request_ends_only_its_connection() -> None:
    source = Fed()
    pipeline = service_module.latency_pipeline(every=0.2).replace(source=source)
    service = service_module.LatencyService(pipeline, port=0)
    async with anyio.create_task_group() as tg:
        url = await tg.start(service.run)
        for _ in range(3):
            stream = await anyio.connect_tcp("127.0.0.1", service.port)
            await stream.send_eof()  # no request at all
            await closed_by_the_service(stream)
        cut = await anyio.connect_tcp("127.0.0.1", service.port)
        await cut.send(b"GET / HT")
        await cut.send_eof()
        await closed_by_the_service(cut)
        status, _ = await anyio.to_thread.run_sync(get, url + "stats")
        assert status == 200
        service.stop()
        source.sender.close()
    assert service.error is None


def test_the_page_is_the_histogram_as_bcc_prints_it() -> None:
    hist = Histogram(
        field="lat_ns",
        unit="usecs",
        scale="log2",
        buckets=[Bucket(2, 3, 5), Bucket(64, 127, 2)],
    )
    assert service_module.render(hist) == "\n".join(histogram_lines(hist)) + "\n"
    lines = service_module.render(hist).splitlines()
    assert lines[0] == "     usecs               : count     distribution"
    assert (
        lines[2] == "         2 -> 3          : 5        |****************************************|"
    )
    assert (
        lines[4] == "         8 -> 15         : 0        |                                        |"
    )
    assert len(lines) == 8  # slots 1..7, from 0 -> 1 up to 64 -> 127
    empty = Histogram(field="lat_ns", unit="usecs", scale="log2", buckets=[])
    assert service_module.render(empty) == ""


class FailsToStart(Source[ReadLatency]):
    def event_type(self) -> type[ReadLatency]:
        return ReadLatency

    name = "reads"

    async def run(self, ctx: SourceContext, emit: Emit[ReadLatency]) -> None:
        raise FlowtraceError("cannot attach: no such probe (run flowtrace doctor)")


@pytest.mark.anyio
async def test_a_pipeline_failing_at_start_raises_its_own_error() -> None:
    pipeline = Pipeline(FailsToStart(), [], service_module.Accumulate())
    service = service_module.LatencyService(pipeline, port=0)
    with pytest.raises(Exception) as caught:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
    error: BaseException = caught.value
    while isinstance(error, BaseExceptionGroup):
        (error,) = error.exceptions
    assert isinstance(error, StageError), repr(error)
    assert "cannot attach: no such probe" in str(error)


def test_main_reports_errors_from_inside_the_event_loop_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(every: float = 1.0) -> Pipeline:
        return Pipeline(FailsToStart(), [], service_module.Accumulate())

    monkeypatch.setattr(service_module, "latency_pipeline", failing)
    assert service_module.main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "latency_service: error: stage 'reads' failed: FlowtraceError: "
        "cannot attach: no such probe (run flowtrace doctor)\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert service_module.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latency_service: error: ") and err.count("\n") == 1, err
    assert "address already in use" in err.lower()


def test_tally_fsyncs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(EXAMPLES / "thirdparty_sink"))
    try:
        import flowtrace_tally
    finally:
        sys.path.remove(str(EXAMPLES / "thirdparty_sink"))
    threads: list[threading.Thread] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.current_thread())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "tally.json"
    anyio.run(Pipeline(ListSource([1, 2, 3]), [], flowtrace_tally.TallySink(out)).run)
    assert json.loads(out.read_text()) == {"counts": {"value/int": 3}, "total": 3}
    assert threads and threading.main_thread() not in threads


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
