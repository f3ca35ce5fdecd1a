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
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import AS_NOBODY, FLOWTRACE, Running, flowtrace_commands
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


@pytest.fixture(scope="module")
def server() -> Iterator[GatedProgram]:
    """A process with the node USDT probes (nodejs_http_server's PID), alive
    while the lessons are explained, record and replay."""
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


@pytest.fixture(scope="module")
def explained(server: GatedProgram) -> dict[str, subprocess.CompletedProcess[str]]:
    """``flowtrace explain LESSON`` of every lesson, as nobody, in one process."""
    commands = [["explain", lesson, *arguments(lesson, server)] for lesson in LESSONS]
    return dict(zip(LESSONS, flowtrace_commands(commands, ROOT, **AS_NOBODY), strict=True))


@pytest.mark.parametrize("lesson", LESSONS)
def test_explain_as_nobody_describes_the_plan(
    lesson: str, explained: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    """Every stage is listed; the probes are resolved where that needs no
    root, else the source says why not (root) instead of failing."""
    result = explained[lesson]
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


@dataclass
class Recorded:
    """A lesson's recording made as root, and its replay as nobody."""

    status: int = -1
    err: str = ""
    end: dict[str, object] | None = None
    replayed: subprocess.CompletedProcess[str] | None = None


def record(lesson: str, path: Path, server: GatedProgram) -> Recorded:
    """``lesson`` recorded to ``path`` as root while 2 syncs and a dd of 2
    blocks from /dev/urandom run."""
    recorded = Recorded()
    try:
        run = Running("--record", str(path), lesson, *arguments(lesson, server))
    except AssertionError as exc:  # reported by the lesson's own test
        recorded.err = str(exc)
        return recorded
    run_syncs(2)
    dd("if=/dev/urandom", "of=/dev/null", "bs=8k", "count=2")
    recorded.status, _, recorded.err = run.stop()
    if recorded.status == 0:
        path.chmod(0o644)
        recorded.end = json.loads(path.read_text().splitlines()[-1])
    return recorded


@pytest.fixture(scope="module")
def recordings(server: GatedProgram) -> Iterator[dict[str, Recorded]]:
    """Every lesson recorded as root (one ``flowtrace run --record`` process
    each), then replayed as nobody (all the replays in one process)."""
    folder = Path(tempfile.mkdtemp(prefix="flowtrace-nobody-"))
    folder.chmod(0o755)
    try:
        recorded = {
            lesson: record(lesson, folder / Path(lesson).stem, server) for lesson in LESSONS
        }
        ready = [lesson for lesson, r in recorded.items() if r.end is not None]
        commands = [
            ["run", "--replay", str(folder / Path(lesson).stem), lesson, *arguments(lesson, server)]
            for lesson in ready
        ]
        for lesson, replayed in zip(
            ready, flowtrace_commands(commands, ROOT, **AS_NOBODY), strict=True
        ):
            recorded[lesson].replayed = replayed
        yield recorded
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_recording_made_as_root_replays_as_nobody(
    lesson: str, recordings: dict[str, Recorded]
) -> None:
    recorded = recordings[lesson]
    assert recorded.status == 0, recorded.err
    assert recorded.end is not None and recorded.end["type"] == "end"
    replayed = recorded.replayed
    assert replayed is not None
    assert replayed.returncode == 0, replayed.stderr
    assert "Traceback" not in replayed.stderr
    source_in = next(int(m.group(1)) for m in re.finditer(r": (\d+) in, \d+ out", replayed.stderr))
    data = recorded.end["data"]
    assert isinstance(data, dict) and source_in == data["events"], replayed.stderr


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
