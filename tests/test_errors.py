"""Hostile and broken input under the real ``flowtrace`` command: each case
ends in one ``flowtrace: error: ...`` line naming the problem and the fix
(or, for Ctrl-C while starting, quietly with 130), a non-zero exit, and no
traceback. FLOWTRACE_DEBUG=1 adds the traceback of an error that is a bug."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clirun import FLOWTRACE, flowtrace

from flowtrace.cli import main
from flowtrace.expression import MAX_CHARS, MAX_DEPTH

DEBUG_HINT = "FLOWTRACE_DEBUG=1 shows the traceback"
RECORDING_HEADER = (
    '{"v":1,"type":"recording","name":"RecordingHeader","data":{"source":"syscalls:sys_enter_sync",'
    '"event":"SysEnterSync","fields":[["ts","u64"],["pid","u32"],["tid","u32"],["comm","char[16]"],'
    '["syscall_nr","s32"]],"clock":"monotonic","start":10.0,"wall_start":1795989792.9}}'
)
RECORDED_EVENT = (
    '{"v":1,"type":"event","name":"SysEnterSync","at":10.5,"data":{"ts":10400000000,'
    '"pid":8437,"tid":8437,"comm":"sync","syscall_nr":162}}'
)
RECORDING_END = (
    '{"v":1,"type":"end","name":"RecordingEnd","at":11.0,'
    '"data":{"events":1,"received":1,"lost":0}}'
)


def one_line(result: subprocess.CompletedProcess[str], status: int, *parts: str) -> str:
    """The single error line of ``result``, checked: its status, no
    traceback, and each of ``parts`` in it."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    [line] = errors
    assert line.startswith("flowtrace: error: "), line
    assert line == result.stderr.splitlines()[-1]  # the last thing printed
    for part in parts:
        assert part in line, (part, line)
    return line


def pipeline_file(tmp_path: Path, text: str, name: str = "p.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- pipeline files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        ("    return {}['missing']\n", "KeyError: 'missing'"),
        ("    return len(5)\n", "TypeError: object of type 'int' has no len()"),
    ],
)
def test_a_factory_raising_names_the_error_and_its_line(
    tmp_path: Path, body: str, raised: str
) -> None:
    path = pipeline_file(tmp_path, f"import os\n\ndef pipeline():\n{body}")
    one_line(
        flowtrace("run", str(path)),
        2,
        f"{path}:pipeline(): {raised} (at {path}:4); fix the pipeline file ({DEBUG_HINT})",
    )


def test_the_debug_variable_adds_the_traceback(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "def pipeline():\n    return {}['missing']\n")
    result = subprocess.run(
        [FLOWTRACE, "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWTRACE_DEBUG": "1"},
    )
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert f'File "{path}", line 2, in pipeline' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"flowtrace: error: {path}:pipeline(): ")


def test_naming_a_source_function_instead_of_a_pipeline(tmp_path: Path) -> None:
    path = pipeline_file(
        tmp_path,
        "from flowtrace import syscall_entry\n\ndef syncs():\n    return syscall_entry('sync')\n",
    )
    one_line(
        flowtrace("explain", f"{path}:syncs"),
        2,
        f"{path}:syncs() returned a source (TracepointSource), not a Pipeline:",
        "FILE:NAME names a pipeline (source | ... | sink) or a function returning one",
    )


def test_naming_a_builtin_without_a_signature(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "from functools import reduce\n")
    one_line(flowtrace("run", f"{path}:reduce"), 2, "has no signature to read its arguments")


def test_a_nul_byte_in_a_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "nul.py"
    path.write_bytes(b"import os\npipeline = 1\x00\n")
    one_line(flowtrace("run", str(path)), 2, f"{path}:2: a NUL byte, not Python text")


def test_a_message_with_line_ends_and_escapes_prints_as_one_line(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "raise ValueError('first\\nsecond\\r\\n\\x1b[2Jthird')\n")
    line = one_line(flowtrace("run", str(path)), 2)
    assert "ValueError: first second \\x1b[2Jthird" in line
    assert result_has_no_control(line)


def result_has_no_control(text: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


# -- exceptions without a message --------------------------------------------

EMPTY_SINK = """
import anyio
from flowtrace import Sink
from flowtrace.testing import ListSource

class Broken(Sink[int]):
    async def write(self, batch):
        raise anyio.BrokenResourceError()

pipeline = ListSource([1, 2, 3]) | Broken()
"""

FAILING_FRESH = """
from flowtrace import Sink
from flowtrace.testing import ListSource

class Odd(Sink[int]):
    async def write(self, batch):
        pass

    def fresh(self):
        raise RuntimeError()

pipeline = ListSource([1, 2, 3]) | Odd()
"""


def test_a_stage_error_without_a_message_names_its_type_and_place(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, EMPTY_SINK)
    one_line(
        flowtrace("run", str(path)),
        1,
        f"stage 'Broken' failed: BrokenResourceError (no message; raised at {path}:8)",
    )


def test_an_unexpected_error_is_one_line_naming_it_a_bug(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, FAILING_FRESH)
    one_line(
        flowtrace("run", str(path)),
        1,
        f"error: unexpected RuntimeError (no message; raised at {path}:10);",
        f"a bug in the pipeline, a plugin or flowtrace ({DEBUG_HINT})",
    )


# -- -e expressions -----------------------------------------------------------


def test_an_expression_too_long_is_refused_by_its_size() -> None:
    expression = "1" + "+1" * 50_000  # 100,001 characters: within what argv takes
    one_line(
        flowtrace("explain", "-e", expression),
        2,
        f"-e: the expression is 100001 characters long, more than {MAX_CHARS};",
        "write the pipeline in a file",
    )


@pytest.mark.parametrize(
    "expression",
    [
        "1" + "+1" * 30_000,  # Python's own parser gives up on this (RecursionError)
        "1" + "+1" * 1_000,  # this it parses; compiling it would exceed the recursion limit
        "not " * 5_000 + "1",  # MemoryError in the parser at some depths
        "a" + ".b" * 10_000,
    ],
    ids=["30k-terms", "1k-terms", "nots", "attributes"],
)
def test_an_expression_too_deep_is_refused_by_its_depth(expression: str) -> None:
    one_line(
        flowtrace("explain", "-e", expression),
        2,
        f"-e: the expression nests more than {MAX_DEPTH} levels deep;",
    )


def test_a_million_terms_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """A million terms do not fit in one argument of a command (128 KiB);
    through main() they are refused before Python parses them."""
    assert main(["explain", "-e", "1" + "|1" * 1_000_000]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"flowtrace: error: -e: the expression is 2000001 characters long, more than"
        f" {MAX_CHARS}; write the pipeline in a file (flowtrace run FILE)\n"
    )


def test_a_long_pipeline_expression_is_still_accepted() -> None:
    stages = "".join(f" | filter(lambda e: e.pid != {i})" for i in range(30))
    result = flowtrace("explain", "-e", f"syscall_entry('sync'){stages}")
    assert "nests more than" not in result.stderr
    assert "characters long" not in result.stderr


# -- recordings ---------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        ([DEEP, RECORDING_HEADER, RECORDING_END], 1),
        ([RECORDING_HEADER.replace('"data":{', f'"data":{DEEP[:50_000]}{{', 1)], 1),
        (
            [
                RECORDING_HEADER,
                '{"v":1,"type":"event","name":"SysEnterSync","at":10.5,"data":' + DEEP + "}",
                RECORDING_END,
            ],
            2,
        ),
        ([RECORDING_HEADER, RECORDED_EVENT.replace('"sync"', DEEP), RECORDING_END], 2),
        (
            [
                RECORDING_HEADER,
                RECORDED_EVENT,
                '{"v":1,"type":"end","name":"RecordingEnd","at":11.0,"data":' + DEEP + "}",
            ],
            3,
        ),
    ],
    ids=["whole-line", "header", "event-data", "event-field", "end-record"],
)
def test_a_recording_nested_too_deep_is_one_line(
    tmp_path: Path, lines: list[str], where: int
) -> None:
    recording = tmp_path / "deep.rec"
    recording.write_text("\n".join(lines) + "\n")
    line = one_line(
        flowtrace("run", "--replay", str(recording), "pipelines/sys_sync.py"),
        2,
        f"{recording}:{where}: ",
        "record it again with flowtrace run --record",
    )
    assert "nested too deeply" in line or "Expected `object`, got `array`" in line


def test_the_recording_used_above_replays(tmp_path: Path) -> None:
    """The header, event and end lines the cases above break are a good recording."""
    recording = tmp_path / "good.rec"
    recording.write_text("\n".join([RECORDING_HEADER, RECORDED_EVENT, RECORDING_END]) + "\n")
    result = flowtrace("run", "--replay", str(recording), "pipelines/sys_sync.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\nsys_sync() called\n")
    assert "flowtrace: syscalls:sys_enter_sync: 1 in, 1 out\n" in result.stderr


def test_record_refuses_a_hard_link_of_the_replayed_recording(tmp_path: Path) -> None:
    recording = tmp_path / "orig.rec"
    text = "\n".join([RECORDING_HEADER, RECORDED_EVENT, RECORDING_END]) + "\n"
    recording.write_text(text)
    link = tmp_path / "link.rec"
    os.link(recording, link)
    result = flowtrace(
        "run", "--replay", str(recording), "--record", str(link), "pipelines/sys_sync.py"
    )
    one_line(
        result,
        2,
        f"--record {link} is the recording being replayed ({recording}), and would"
        " overwrite it; record to another file",
    )
    assert recording.read_text() == text  # untouched
    other = tmp_path / "copy.rec"
    assert flowtrace(
        "run", "--replay", str(link), "--record", str(other), "pipelines/sys_sync.py"
    ).returncode == 0


# -- Ctrl-C while starting ----------------------------------------------------

# Put first on the command's module path, this marks the moment flowtrace's
# package imports its second module: flowtrace is importing, main() has not
# run. (Before flowtrace's first line, a Ctrl-C is Python's own start-up.)
MARK_IMPORTING = """
import importlib.abc, pathlib, sys

class Mark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "flowtrace.argument_sources":
            pathlib.Path({marker!r}).touch()
        return None

sys.meta_path.insert(0, Mark())
"""


@pytest.mark.parametrize("after", [0.0, 0.1])
def test_ctrl_c_while_the_command_imports_ends_it_quietly(tmp_path: Path, after: float) -> None:
    marker = tmp_path / "importing"
    (tmp_path / "sitecustomize.py").write_text(MARK_IMPORTING.format(marker=str(marker)))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [FLOWTRACE, "run", "pipelines/sys_sync.py"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    wait_for(marker)
    time.sleep(after)  # the scenario: how long after the start Ctrl-C comes
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert (out, err) == ("", "")


def wait_for(marker: Path) -> None:
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.001)  # poll interval of this bounded wait
    assert marker.exists()


def test_ctrl_c_while_the_pipeline_file_loads_ends_it_quietly(tmp_path: Path) -> None:
    marker = tmp_path / "loading"
    path = pipeline_file(
        tmp_path, f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)\n"
    )
    process = subprocess.Popen(
        [FLOWTRACE, "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(marker)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert (out, err) == ("", "")


def test_a_warning_naming_a_file_with_a_line_end_is_one_line(tmp_path: Path) -> None:
    recording = tmp_path / "cut\nshort\x1b[2J.rec"
    recording.write_text(f"{RECORDING_HEADER}\n{RECORDED_EVENT}\n")  # no end record
    result = flowtrace("run", "--replay", str(recording), "pipelines/sys_sync.py")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "cut short" in line]
    assert warning.startswith("flowtrace: syscalls:sys_enter_sync: ")
    assert "cut short\\x1b[2J.rec stops at line 3 (cut short: no end record)" in warning
