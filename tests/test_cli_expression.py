"""``flowtrace run -e`` and ``flowtrace explain -e`` under the real command:
one line and exit status 2 for every bad expression or bad combination of
arguments, and expressions traced against real workloads."""

from __future__ import annotations

import re
import subprocess

import pytest
from clirun import Running, flowtrace, flowtrace_table
from workloads import run_syncs


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The message of a one-line error with exit status 2."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    err = result.stderr
    assert err.count("\n") == 1, err
    assert err.startswith("flowtrace: error: ")
    assert "Traceback" not in err
    return err.removeprefix("flowtrace: error: ").rstrip("\n")


@pytest.mark.parametrize("command", ["run", "explain"])
def test_a_file_or_an_expression_but_not_both(command: str) -> None:
    assert one_line_error(flowtrace(command)) == "give a pipeline FILE or -e EXPR"
    both = flowtrace(command, "-e", "sync_calls()", "pipelines/sys_sync.py")
    assert one_line_error(both) == "give a pipeline FILE or -e EXPR, not both"


BAD_EXPRESSIONS = [
    ('sync_calls() | count("comm"', "-e: syntax error at column 21: '(' was never closed"),
    ("sync_cals()", "-e: unknown name 'sync_cals' at column 1; did you mean sync_calls,"),
    ("sync_calls() | console", "-e: sink 'console' at column 16 is not called"),
    ('sync_calls() | count("comm", top=0)', "-e: count: top must be a positive integer"),
    ("sync_calls() | count()", "-e: TypeError: count() missing 1 required positional"),
]


@pytest.mark.parametrize("command", ["run", "explain"])
@pytest.mark.parametrize(("expression", "message"), BAD_EXPRESSIONS)
def test_a_bad_expression_is_one_line_exit_2(command: str, expression: str, message: str) -> None:
    table = tuple((c, "-e", e) for c in ("run", "explain") for e, _ in BAD_EXPRESSIONS)
    result = flowtrace_table(table)[(command, "-e", expression)]
    assert one_line_error(result).startswith(message)
    assert result.seconds < 1.0  # refused before any kernel work


def test_options_may_follow_the_expression() -> None:
    result = flowtrace("run", "-e", "sync_cals()", "--duration", "1")
    assert one_line_error(result).startswith("-e: unknown name 'sync_cals'")


@pytest.mark.kernel
def test_explain_an_expression() -> None:
    result = flowtrace("explain", "-e", 'sync_calls() | filter(F.comm == "sync") | count("pid")')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "source sync: SyncCall into filter, count in the kernel;"
        " results read from BPF maps by user space"
    )
    assert [line.split(":")[0] for line in lines[2:5]] == [
        "operator filter (kernel)",
        "operator count (kernel)",
        "sink console",
    ]
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_sync)" in result.stdout
    assert "BPF_PERCPU_HASH(ft_count_by_1, struct ft_key_1" in result.stdout


@pytest.mark.kernel
def test_an_expression_without_a_sink_prints_each_event() -> None:
    run = Running("-e", 'sync_calls() | filter(F.comm == "sync")')
    pids = run_syncs(3)
    code, out, err = run.stop()
    assert code == 0, err
    ours = [line for line in out.splitlines() if int(re.findall(r" pid=(\d+) ", line)[0]) in pids]
    assert [re.sub(r"^ts=\d+ ", "", line) for line in ours] == [
        f"pid={pid} comm='sync'" for pid in pids
    ]
    assert "flowtrace: console: " in err


@pytest.mark.kernel
def test_an_expression_counting_by_a_field() -> None:
    run = Running("--duration", "30", "-e", 'sync_calls() | count("pid")')
    pids = run_syncs(4)
    code, out, err = run.stop()
    assert code == 0, err
    rows = dict(line.split() for line in out.splitlines()[1:])
    assert out.splitlines()[0].split() == ["PID", "COUNT"]
    assert {pid: rows.get(str(pid)) for pid in pids} == dict.fromkeys(pids, "1")
