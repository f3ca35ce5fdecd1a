"""Output modes of ``flowtrace run``: ``-o ndjson`` (every stdout line a
schema-v1 record, piped through jq), ``--quiet`` (results only), headers
printed once the probes are attached, and ``--live`` refusing a pipe."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from clirun import FLOWTRACE, flowtrace
from workloads import run_syncs

NUMBERS = """
from flowtrace.sinks.console import ConsoleSink
from flowtrace.testing import ListSource

pipeline = ListSource([1, 2, 3]) | ConsoleSink(line=str, header="Counting...")
"""


def _records(stdout: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert all(r["v"] == 1 for r in records)
    return records


def test_ndjson_output_replaces_the_console_and_keeps_reports(tmp_path: Path) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(NUMBERS)
    result = flowtrace("run", str(path), "-o", "ndjson")
    assert result.returncode == 0, result.stderr
    records = _records(result.stdout)
    assert [r["type"] for r in records] == ["value", "value", "value", "summary"]
    assert [r["data"] for r in records[:3]] == [1, 2, 3]
    assert "flowtrace: ndjson: 3 in, 3 out" in result.stderr.splitlines()


def test_quiet_leaves_only_results(tmp_path: Path) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(NUMBERS)
    text = flowtrace("run", "-q", str(path))
    assert (text.returncode, text.stdout, text.stderr) == (0, "1\n2\n3\n", "")
    loud = flowtrace("run", str(path))
    assert loud.stdout == "Counting...\n1\n2\n3\n"
    records = flowtrace("run", str(path), "--quiet", "-o", "ndjson")
    assert records.stderr == ""
    assert [r["data"] for r in _records(records.stdout)] == [1, 2, 3]


def test_live_refuses_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(NUMBERS)
    result = flowtrace("run", "--live", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "flowtrace: error: --live needs a terminal on standard output;"
        " use -o text or -o ndjson to pipe\n"
    )


@pytest.mark.kernel
def test_ndjson_piped_to_jq_parses_every_line() -> None:
    """The issue's command: flowtrace run -o ndjson --duration 3
    pipelines/sys_sync.py | jq -c . (with syncs of our own while it runs)."""
    jq = shutil.which("jq")
    assert jq, "jq is needed (scripts/setup.sh --test installs it)"
    flow = subprocess.Popen(
        [FLOWTRACE, "run", "-o", "ndjson", "--duration", "3", "pipelines/sys_sync.py"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert flow.stdout is not None and flow.stderr is not None
    jq_run = subprocess.Popen(
        [jq, "-c", "."], stdin=flow.stdout, stdout=subprocess.PIPE, text=True
    )
    flow.stdout.close()
    attached = threading.Event()
    err: list[str] = []

    def read_stderr() -> None:
        assert flow.stderr is not None
        for line in flow.stderr:
            err.append(line)
            if "attached" in line:
                attached.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert attached.wait(30), "".join(err)
    ours = run_syncs(2)
    out, _ = jq_run.communicate(timeout=60)
    assert flow.wait(30) == 0
    reader.join()
    flow.stderr.close()
    assert jq_run.returncode == 0
    records = _records(out)
    kinds = [r["type"] for r in records]
    assert kinds[0] == "attach" and kinds[-1] == "summary"
    synced = [r["data"]["pid"] for r in records if r["type"] == "event"]  # type: ignore[index]
    assert set(ours) <= set(synced)
    assert "Traceback" not in "".join(err)


@pytest.mark.kernel
def test_the_header_is_printed_once_the_probes_are_attached() -> None:
    """A sync run the moment the header appears is traced."""
    expression = 'syscall_entry("sync") | console(line=lambda e: str(e.pid), header="Tracing...")'
    flow = subprocess.Popen(
        [FLOWTRACE, "run", "-e", expression],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert flow.stdout is not None
    deadline = time.monotonic() + 30
    assert flow.stdout.readline() == "Tracing...\n"
    assert time.monotonic() < deadline
    [ours] = run_syncs(1)
    flow.send_signal(2)  # at once: the stop's drain delivers what the kernel holds
    out, err = flow.communicate(timeout=30)
    assert flow.returncode == 0, err
    assert str(ours) in out.splitlines()
    attach = [line for line in err.splitlines() if " attached " in line]
    assert attach, err


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """``flowtrace list | head -1`` and a run piped to ``head``: exit 0, no traceback."""
    many = tmp_path / "many.py"
    many.write_text(
        "from flowtrace.sinks.console import ConsoleSink\n"
        "from flowtrace.testing import ListSource\n"
        "pipeline = ListSource(range(200_000)) | ConsoleSink(line=str)\n"
    )
    for command in (f"{FLOWTRACE} list", f"{FLOWTRACE} run -q {many}"):
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command} | head -n 1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.count("\n") == 1
        assert "Traceback" not in result.stderr and "error" not in result.stderr
