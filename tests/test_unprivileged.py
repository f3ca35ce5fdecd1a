"""Every lesson as an unprivileged user (``nobody``): ``explain`` works or
fails in one line saying root is needed, a recording made as root replays
with every event, and ``doctor`` reports one line per check and a summary
saying root is needed. Building a pipeline reads nothing root-only."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import AS_NOBODY, FLOWTRACE, Running
from workloads import GatedProgram, dd, http_requests, run_syncs

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(
    str(path.relative_to(ROOT))
    for path in [*ROOT.glob("pipelines/*.py"), *ROOT.glob("pipelines/tools/*.py")]
    if path.name != "__init__.py"
)
NEEDS_ARGUMENTS = {"http_filter": ["lo"], "xdp_drop_count": ["lo"]}
CHECK_LINE = re.compile(r"\[(  ok|warn|fail|skip)\] [a-z_ ]+: \S")


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWTRACE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        **AS_NOBODY,
    )


@pytest.fixture
def server() -> Iterator[GatedProgram]:
    """A process with the node USDT probes (nodejs_http_server's PID), alive
    while the lesson records and replays."""
    program = http_requests([])
    yield program
    program.go()


def arguments(lesson: str, server: GatedProgram) -> list[str]:
    name = Path(lesson).stem
    return [str(server.pid)] if name == "nodejs_http_server" else NEEDS_ARGUMENTS.get(name, [])


def test_every_lesson_is_covered() -> None:
    assert len(LESSONS) >= 30
    assert "pipelines/tools/execsnoop.py" in LESSONS and "pipelines/sys_sync.py" in LESSONS


RESOLVED_AS_NOBODY = {"strlen_count", "profile"}  # uprobes and perf events: no tracefs


@pytest.mark.parametrize("lesson", LESSONS)
def test_explain_as_nobody_describes_the_plan(lesson: str, server: GatedProgram) -> None:
    """Every stage is listed; the probes are resolved where that needs no
    root, else the source says why not (root) instead of failing."""
    result = as_nobody("explain", lesson, *arguments(lesson, server))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("source "), lines
    assert any(line.startswith("sink ") for line in lines), lines
    if Path(lesson).stem in RESOLVED_AS_NOBODY:
        assert "not resolved" not in lines[0] and "/* BPF program */" in lines, lines
    else:
        assert "not resolved: " in lines[0] and "run as root" in lines[0], lines[0]
        assert "/* BPF program */" not in lines


def test_explain_json_as_nobody_fails_in_one_line() -> None:
    result = as_nobody("explain", "--json", "pipelines/disklatency.py")
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("flowtrace: error: ") and "run as root" in line, line


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_recording_made_as_root_replays_as_nobody(lesson: str, server: GatedProgram) -> None:
    folder = Path(tempfile.mkdtemp(prefix="flowtrace-nobody-"))
    folder.chmod(0o755)
    recording = folder / "rec"
    try:
        run = Running("--record", str(recording), lesson, *arguments(lesson, server))
        run_syncs(2)
        dd("if=/dev/urandom", "of=/dev/null", "bs=8k", "count=2")
        status, _, err = run.stop()
        assert status == 0, err
        recording.chmod(0o644)
        end = json.loads(recording.read_text().splitlines()[-1])
        assert end["type"] == "end"

        replayed = as_nobody("run", "--replay", str(recording), lesson, *arguments(lesson, server))
        assert replayed.returncode == 0, replayed.stderr
        assert "Traceback" not in replayed.stderr
        source_in = next(
            int(m.group(1)) for m in re.finditer(r": (\d+) in, \d+ out", replayed.stderr)
        )
        assert source_in == end["data"]["events"], replayed.stderr
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_doctor_as_nobody_is_one_line_per_check_and_says_root_is_needed() -> None:
    result = as_nobody("doctor")
    assert result.returncode == 1
    assert result.stderr == ""
    *checks, summary = result.stdout.splitlines()
    assert len(checks) >= 14
    assert all(CHECK_LINE.match(line) for line in checks), checks
    assert "[fail] privileges: not root, no CAP_BPF/CAP_PERFMON" in checks[0]
    assert any(line.startswith("[skip] bpf: not checked: needs root") for line in checks)
    assert any(line.startswith("[skip] tracefs: ") for line in checks)
    assert summary.startswith("not ready: tracing needs root (or CAP_BPF and CAP_PERFMON); ")
    assert summary.endswith("run as root (sudo flowtrace doctor)")
