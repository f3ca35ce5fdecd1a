"""The flowtrace command: one-line errors for bad pipeline files, and every
lesson pipeline run under the CLI, stopped with SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from clirun import Running, flowtrace, flowtrace_table
from workloads import forker, run_syncs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no pipeline file"),
        ("pipeline = (\n", "syntax error: '(' was never closed"),
        ("x = 1\n", "defines no 'pipeline'"),
        ("pipeline = 3\n", "is a int, not a Pipeline"),
        ("import no_such_module_here\n", "failed while loading: ModuleNotFoundError"),
        ("def pipeline():\n    return 'no'\n", "returned a str, not a Pipeline"),
    ],
)
def test_bad_pipeline_file_is_one_line_exit_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "p.py"
    if content is not None:
        path.write_text(content)
    result = flowtrace("run", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("flowtrace: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_pipeline_taking_no_arguments_rejects_them() -> None:
    result = flowtrace("run", "pipelines/sys_sync.py", "extra")
    _one_line_error(result, "unrecognized arguments: extra; see flowtrace run sys_sync --help")


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sys_sync_under_the_cli(sig: int) -> None:
    run = Running("pipelines/sys_sync.py")
    run_syncs(3)
    code, out, err = run.stop(sig)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Tracing sys_sync()... Ctrl-C to end."
    assert lines[1:].count("sys_sync() called") >= 3
    assert "flowtrace: syscalls:sys_enter_sync: " in err and " in, " in err  # the final summary
    assert "Traceback" not in err


def _fork_lines(out: str, pid: int) -> list[str]:
    return [line for line in out.splitlines() if f"-{pid} " in line or f" {pid} " in line]


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("lesson", "title"),
    [
        ("pipelines/hello_world.py", None),
        ("pipelines/hello_fields.py", "TIME(s)            COMM             PID    MESSAGE"),
        ("pipelines/hello_perf_output.py", "TIME(s)            COMM             PID    MESSAGE"),
    ],
)
def test_process_lessons_under_the_cli(lesson: str, title: str | None) -> None:
    run = Running(lesson)
    workload = forker(4)
    workload.go()
    code, out, err = run.stop()
    assert code == 0, err
    if title:
        assert out.splitlines()[0] == title
    ours = _fork_lines(out, workload.pid)
    assert len(ours) == 4, out
    assert all("python3" in line for line in ours)
    source = "clones" if lesson.endswith("hello_world.py") else "sched:sched_process_fork"
    assert f"flowtrace: {source}: " in err


@pytest.mark.kernel
def test_explain_prints_plan_and_program_without_attaching() -> None:
    result = flowtrace("explain", "pipelines/sys_sync.py")
    assert result.returncode == 0, result.stderr
    from flowtrace import syscall_entry

    source = syscall_entry("sync")
    (choice,) = source.plan()
    assert choice.describe() in result.stdout
    assert source.program().text in result.stdout


@pytest.mark.kernel
def test_doctor_json_reports_every_check() -> None:
    import json

    result = flowtrace("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert set(checks) >= {
        "privileges",
        "bcc",
        "kernel headers",
        "tracefs",
        "tracepoints",
        "kprobes",
        "fentry",
        "uprobes",
        "usdt",
        "perf_events",
        "ringbuf",
        "btf",
    }
    assert all(c["status"] in ("ok", "warn", "fail") for c in checks.values())
    assert all(c["fix"] for c in checks.values() if c["status"] != "ok")
    assert result.returncode == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


@pytest.mark.kernel
def test_source_that_cannot_attach_is_one_line_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "absent.py"
    path.write_text(
        "from flowtrace import KernelSource, Probe, Tracepoint\n"
        "from flowtrace.sinks.console import ConsoleSink\n"
        "from flowtrace.sources.syscalls import SyncCall\n"
        "probe = Probe('an absent event', Tracepoint('nosuch', 'event'))\n"
        "pipeline = KernelSource(SyncCall, probe, name='absent') | ConsoleSink(line=str)\n"
    )
    result = flowtrace("run", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        "flowtrace: error: stage 'absent' failed: AttachError: cannot observe an absent event"
        " on this kernel (tried tracepoint nosuch:event: no tracepoint nosuch:event in this kernel)"
    ]


NO_EVENT_SOURCE = """
from pathlib import Path

from flowtrace import Source
from flowtrace.testing import CollectSink

RAN = Path(__file__).with_name("ran")


class Untyped(Source[int]):
    name = "untyped"

    async def run(self, ctx, emit):
        RAN.write_text("ran")
        ctx.ready()
        await emit([1, 2])


pipeline = Untyped() | CollectSink()
"""


def _one_line_error(result: object, *fragments: str) -> None:
    import subprocess

    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("flowtrace: error: ") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert all(f in result.stderr for f in fragments), result.stderr
    assert "Traceback" not in result.stderr


def test_record_refuses_a_source_without_an_event_type_before_running(tmp_path: Path) -> None:
    path = tmp_path / "untyped.py"
    path.write_text(NO_EVENT_SOURCE)
    recording = tmp_path / "out.rec"
    result = flowtrace("run", "--record", str(recording), str(path))
    _one_line_error(result, "--record: source 'untyped' declares no event type", "could not be")
    assert not recording.exists()
    assert not (tmp_path / "ran").exists()
    ok = flowtrace("run", str(path))  # without --record it runs
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ran").exists()


def test_record_into_a_directory_is_refused_before_running(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    result = flowtrace("run", "--record", str(folder), "pipelines/sys_sync.py")
    _one_line_error(result, f"--record {folder}: is a directory; give a file path")
    assert list(folder.iterdir()) == []


BAD_DURATIONS = ["-1", "0", "nan", "inf", "-inf", "soon", "1e400"]


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_duration_must_be_a_finite_positive_number(value: str) -> None:
    table = tuple(
        command
        for v in BAD_DURATIONS
        for command in [
            ("run", f"--duration={v}", "pipelines/sys_sync.py"),
            ("run", "pipelines/sys_sync.py", f"--duration={v}"),  # after the file
        ]
    )
    results = flowtrace_table(table)
    result = results[("run", f"--duration={value}", "pipelines/sys_sync.py")]
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"flowtrace: error: argument --duration: {value!r} is not a positive number of seconds;"
        " see flowtrace run --help\n"
    )
    after = results[("run", "pipelines/sys_sync.py", f"--duration={value}")]
    assert after.returncode == 2
    assert after.stderr == result.stderr.replace(
        "flowtrace run --help", "flowtrace run sys_sync --help"
    )


DIGITS_NOT_NUMBERS = [
    (["pipelines/vfsreadlat.py", "²"], "argument interval: '²' is not a whole number"),
    (["pipelines/vfsreadlat.py", "1", "٣"], "argument count: '٣' is not a whole number"),
    (["pipelines/nodejs_http_server.py", "²"], "argument pid: '²' is not a whole number"),
]


@pytest.mark.parametrize(("args", "problem"), DIGITS_NOT_NUMBERS)
def test_lesson_arguments_that_are_digits_but_not_numbers(args: list[str], problem: str) -> None:
    table = tuple(("run", *a) for a, _ in DIGITS_NOT_NUMBERS)
    command = ("run", *args)
    _one_line_error(flowtrace_table(table)[command], problem, "; see flowtrace run ")


def test_a_factory_value_error_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_text(
        "from flowtrace.sources.syscalls import sync_calls\n"
        "from flowtrace.testing import CollectSink\n"
        "def pipeline(args):\n"
        "    every = int(args[0])\n"
        "    return sync_calls() | CollectSink()\n"
    )
    result = flowtrace("run", str(path), "often")
    _one_line_error(
        result,
        f"{path}: bad arguments: invalid literal for int() with base 10: 'o';"
        f" see flowtrace run {path} --help",
    )
