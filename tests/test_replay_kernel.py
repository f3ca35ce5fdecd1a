"""Record real kernel pipelines as root under the CLI, replay them as an
unprivileged user without bcc, and get the same output, records and counters."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clirun import AS_NOBODY
from workloads import forker, run_syncs

pytestmark = pytest.mark.kernel

FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))
ROOT = Path(__file__).resolve().parent.parent
NO_BCC = "import sys; sys.modules['bcc'] = None; from flowtrace.cli import main; sys.exit(main())"
EVENT_TYPES = ("event", "trace_fields")  # kernel events; trace_pipe lines (lessons 1, 3-5)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def event_pids(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {r["data"]["pid"] for r in records(path) if r["type"] in EVENT_TYPES}


def syncs() -> list[int]:
    return run_syncs(3)


def forks() -> list[int]:
    workload = forker(4)
    workload.go()
    return [workload.pid]


# a source written by hand: its own event class and probe
CLONES = """
from flowtrace import Event, KernelSource, Probe, syscall_entry_points
from flowtrace.ktypes import cpu_id, ktime_ns, task_comm, task_pid
from flowtrace.sinks.console import ConsoleSink


class Clone(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    cpu: cpu_id
    comm: task_comm


calls = syscall_entry_points("clone", "clone3", "fork", "vfork")
source = KernelSource(Clone, Probe("entry of clone/clone3/fork/vfork", *calls), name="clones")
pipeline = source | ConsoleSink(line=lambda e: f"{e.comm} {e.pid} cpu {e.cpu} at {e.ts}")
"""

# an event type generated from the tracepoint's format file: the replay,
# as nobody, must rebuild it from the recording (nobody cannot read tracefs)
EXECS = """
from flowtrace import tracepoint
from flowtrace.sinks.console import ConsoleSink

pipeline = tracepoint("sched:sched_process_exec") | ConsoleSink(
    line=lambda e: f"{e.comm} {e.pid} {e.filename} {e.task_pid} {e.ts}"
)
"""
INLINE = {"clones.py": CLONES, "execs.py": EXECS}


@pytest.mark.parametrize(
    ("lesson", "workload"),
    [
        ("pipelines/sys_sync.py", syncs),
        ("clones.py", forks),
        ("execs.py", syncs),
        ("pipelines/hello_world.py", forks),
    ],
)
def test_recorded_kernel_run_replays_the_same_without_root(
    lesson: str, workload: Callable[[], list[int]]
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="flowtrace-replay-"))
    folder.chmod(0o777)  # the replay runs as nobody
    try:
        if lesson in INLINE:
            text, lesson = INLINE[lesson], str(folder / lesson)
            Path(lesson).write_text(text)
            Path(lesson).chmod(0o644)
        recording, live_out, replay_out = (folder / n for n in ("rec", "live", "replay"))
        live = subprocess.Popen(
            [FLOWTRACE, "run", "--record", str(recording), "--sink", f"ndjson:{live_out}", lesson],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert live.stderr is not None
        started: list[str] = []
        while not started or "attached" not in started[-1]:
            line = live.stderr.readline()
            assert line, f"never attached: {''.join(started)}"
            started.append(line)
        pids = workload()
        deadline = time.monotonic() + 30
        while not set(pids) <= event_pids(live_out) and time.monotonic() < deadline:
            time.sleep(0.02)  # poll interval of this bounded wait
        live.send_signal(signal.SIGINT)
        live_stdout, live_err = live.communicate(timeout=30)
        assert live.returncode == 0, live_err
        assert set(pids) <= event_pids(live_out)
        recording.chmod(0o644)
        sinks = ["--sink", f"ndjson:{replay_out}", lesson]

        replayed = subprocess.run(
            [sys.executable, "-c", NO_BCC, "run", "--replay", str(recording), *sinks],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            **AS_NOBODY,
        )
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout == live_stdout
        assert "Traceback" not in replayed.stderr

        live_records, replay_records = records(live_out), records(replay_out)
        replayed_events = [r for r in replay_records if r["type"] in EVENT_TYPES]
        assert replayed_events == [r for r in live_records if r["type"] in EVENT_TYPES]
        assert replayed_events
        assert replay_records[-1]["type"] == live_records[-1]["type"] == "summary"
        assert replay_records[-1]["data"] == live_records[-1]["data"]
        summary = [line for line in replayed.stderr.splitlines() if " in, " in line]
        assert summary == [line for line in live_err.splitlines() if " in, " in line]
    finally:
        shutil.rmtree(folder)
