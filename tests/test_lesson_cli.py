"""Every new lesson under the flowtrace command, stopped with SIGINT: a clean
exit, the lesson's output for a known workload, the final summary, and
nothing left attached. Bad arguments give one line and exit 2."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clirun import Running, flowtrace, flowtrace_table
from workloads import dd, file_reader, http_requests, strlen_caller, syncs_apart

from flowtrace.kernel import tracefs


@dataclass
class Smoke:
    """A lesson run: its arguments, the workload to run while it traces, and
    regular expressions some line of its output must match afterwards."""

    path: str
    source: str  # the source stage's name in the summary
    head: list[str]  # the first lines printed
    workload: Callable[[], object] = lambda: None
    expect: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)


def direct_write(tmp: Path) -> Callable[[], None]:
    def write() -> None:
        dd("if=/dev/zero", f"of={tmp / 'out'}", "bs=128k", "count=4", "oflag=direct")

    return write


def urandom_reads() -> None:
    dd("if=/dev/urandom", "of=/dev/null", "bs=8k", "count=5")


QUICK = "Tracing for quick sync's... Ctrl-C to end"
SYNC_LINE = r"At time \d+\.\d\d s: multiple syncs detected, last \d+ ms ago"
DISK_TITLE = "TIME(s)            T  BYTES    LAT(ms)"
TRACING = "Tracing... Hit Ctrl-C to end."
BLOCK = "block:block_rq_issue + block:block_rq_complete"  # the source's name


def smokes(tmp: Path) -> dict[str, Callable[[], Smoke]]:
    def syncs() -> None:
        syncs_apart(3, 0.1)

    def reads() -> None:
        data = tmp / "data"
        data.write_bytes(bytes(4096))
        file_reader(str(data), 4096, 10).go()

    def strlen() -> Smoke:
        tag = f"flowtrace-{uuid.uuid4().hex[:8]}"
        workload = strlen_caller({tag: 3})
        return Smoke(
            "strlen_count.py",
            "strlen",
            ["Tracing strlen()... Hit Ctrl-C to end."],
            workload.go,
            [r"     COUNT STRING", rf'         3 "{tag}"'],
        )

    def nodejs() -> Smoke:
        workload = http_requests(["/index.html", "/b"])
        return Smoke(
            "nodejs_http_server.py",
            "http__server__request",
            ["TIME(s)            COMM             PID    ARGS"],
            workload.go,
            [rf"http_requests +{workload.pid} +path:/index\.html$", r"path:/b$"],
            [str(workload.pid)],
        )

    urandom_title = "TIME(s)            COMM             PID    GOTBITS"
    return {
        "sync_timing.py": lambda: Smoke(
            "sync_timing.py", "quick_syncs", [QUICK], syncs, [SYNC_LINE]
        ),
        "sync_count.py": lambda: Smoke(
            "sync_count.py",
            "syscalls:sys_enter_sync",
            [QUICK],
            syncs,
            [SYNC_LINE + r" \(sync count \d+\)"],
        ),
        "sync_perf_output.py": lambda: Smoke(
            "sync_perf_output.py", "quick_syncs", [QUICK], syncs, [SYNC_LINE]
        ),
        "disksnoop.py": lambda: Smoke(
            "disksnoop.py", "disk", [DISK_TITLE], direct_write(tmp), [r" W +131072 +\d+\.\d\d$"]
        ),
        "disksnoop_tp.py": lambda: Smoke(
            "disksnoop_tp.py", BLOCK, [DISK_TITLE], direct_write(tmp), [r" W +131072 +\d+\.\d\d$"]
        ),
        "bitehist.py": lambda: Smoke(
            "bitehist.py",
            "block:block_rq_issue",
            [TRACING],
            direct_write(tmp),
            [r"^ +kbytes +: count +distribution$", r"^ +128 -> 255 +: [1-9]"],
        ),
        "disklatency.py": lambda: Smoke(
            "disklatency.py",
            BLOCK,
            [TRACING],
            direct_write(tmp),
            [r"^ +usecs +: count +distribution$"],
        ),
        "vfsreadlat.py": lambda: Smoke(
            "vfsreadlat.py",
            "reads",
            [],  # the header depends on the kernel: see test_kernel_lessons
            reads,
            [r"^Tracing\.\.\. Hit Ctrl-C to end\.$", r"^ +usecs +: count +distribution$"],
            ["1"],
        ),
        "urandomread.py": lambda: Smoke(
            "urandomread.py",
            "urandom",
            [urandom_title],
            urandom_reads,
            [r"^\d+\.\d{9} +dd +\d+ +65536$"],
        ),
        "strlen_count.py": strlen,
        "nodejs_http_server.py": nodejs,
        "task_switch.py": lambda: Smoke(
            "task_switch.py",
            "sched:sched_switch",
            [],
            syncs,
            [r"^task_switch\[ *\d+-> *\d+\]=\d+$"],
        ),
    }


LESSONS = sorted(smokes(Path()).keys())


def _left_behind(pid: int) -> list[str]:
    """Probe events and tracefs instances process ``pid`` registered that
    still exist (bcc names probe events ``..._bcc_PID``)."""
    root = tracefs()
    assert root is not None
    events = [
        line
        for name in ("uprobe_events", "kprobe_events")
        if (root / name).exists()
        for line in (root / name).read_text().splitlines()
        if f"_bcc_{pid}" in line
    ]
    return events + [p.name for p in (root / "instances").glob(f"flowtrace-{pid}-*")]


@pytest.mark.kernel
@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_under_the_cli_stops_cleanly_on_sigint(lesson: str, tmp_path: Path) -> None:
    smoke = smokes(tmp_path)[lesson]()
    run = Running(f"pipelines/{smoke.path}", *smoke.args)
    smoke.workload()
    code, out, err = run.stop()
    assert code == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert lines[: len(smoke.head)] == smoke.head
    for pattern in smoke.expect:
        assert any(re.search(pattern, text) for text in lines), (pattern, out)
    summary = [text for text in err.splitlines() if text.startswith(f"flowtrace: {smoke.source}: ")]
    assert any(" in, " in text and " out" in text for text in summary), err
    assert _left_behind(run.process.pid) == []


BAD_LESSON_ARGUMENTS = [
    (["pipelines/vfsreadlat.py", "x"], "argument interval: 'x' is not a whole number"),
    (["vfsreadlat", "0"], "argument interval: '0' is less than 1"),
    (["vfsreadlat", "1", "2", "3"], "unrecognized arguments: 3"),
    (["vfsreadlat", "-x"], "unrecognized arguments: -x"),
    (["disklatency", "-m", "1", "0"], "argument count: '0' is less than 1"),
    (["pipelines/nodejs_http_server.py"], "the following arguments are required: pid"),
    (["nodejs_http_server", "node"], "argument pid: 'node' is not a whole number"),
]


@pytest.mark.parametrize(("args", "problem"), BAD_LESSON_ARGUMENTS)
def test_bad_lesson_arguments_give_one_line_and_exit_2(args: list[str], problem: str) -> None:
    table = tuple(("run", *a) for a, _ in BAD_LESSON_ARGUMENTS)
    command = ("run", *args)
    result = flowtrace_table(table)[command]
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("flowtrace: error: ")
    assert problem in result.stderr
    name = Path(args[0]).stem
    assert result.stderr.endswith(f"; see flowtrace run {name} --help\n")  # the fix


@pytest.mark.kernel
def test_a_pid_without_the_probe_gives_one_line_and_exit_2() -> None:
    gone = http_requests([])
    gone.go()
    result = flowtrace("run", "pipelines/nodejs_http_server.py", str(gone.pid))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no process {gone.pid}" in result.stderr
    assert "give the PID of a process with that probe" in result.stderr
