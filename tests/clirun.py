"""Running the ``flowtrace`` command in tests."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))

AS_NOBODY: dict[str, Any] = {"user": "nobody", "group": "nogroup", "extra_groups": []}
"""subprocess arguments that run a command as the unprivileged user nobody."""


def flowtrace(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flowtrace ARGS`` to completion, capturing its output."""
    return subprocess.run([FLOWTRACE, *args], capture_output=True, text=True, timeout=60)


class Running:
    """A ``flowtrace run`` process, ready once its probes are attached."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [FLOWTRACE, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stderr is not None
        self.err_lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.err_lines.append(line)
            if "attached" in line:
                return
        self.process.kill()
        raise AssertionError(f"never attached: {''.join(self.err_lines)}")

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        """Signal the process at once, wait; returns (exit code, stdout, stderr).

        What the kernel still holds is the stop's to deliver (its drain)."""
        self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, "".join(self.err_lines) + err


_COMMANDS_IN_ONE_PROCESS = """
import json, os, sys, tempfile, time
sys.argv = ["flowtrace"]
from flowtrace.cli import main
results = []
for argv in json.load(sys.stdin):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        started = time.monotonic()
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        took = time.monotonic() - started
        results.append([code, out.read().decode(), err.read().decode(), took])
print(json.dumps(results))
"""


class Ran(subprocess.CompletedProcess[str]):
    """What a command of :func:`flowtrace_commands` did, and how long it took
    (``seconds``, from the call of ``main`` to its return)."""

    def __init__(self, args: list[str], code: int, out: str, err: str, seconds: float) -> None:
        super().__init__(args, code, out, err)
        self.seconds = seconds


def flowtrace_commands(
    commands: Sequence[Sequence[str]], cwd: Path | None = None, **popen: Any
) -> list[Ran]:
    """Run each ``flowtrace ARGS`` of ``commands`` in turn through
    :func:`flowtrace.cli.main`, all in one new process (one start-up instead
    of one per command: the checks here are about what each command does,
    as the user ``popen`` may name, not about starting Python). Each gets its
    own exit status and everything written to descriptors 1 and 2 while it
    ran. Anything the process writes besides (at start-up) fails the call."""
    done = subprocess.run(
        [sys.executable, "-c", _COMMANDS_IN_ONE_PROCESS],
        input=json.dumps([list(c) for c in commands]),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60 + 10 * len(commands),
        **popen,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [
        Ran([FLOWTRACE, *argv], code, out, err, seconds)
        for argv, (code, out, err, seconds) in zip(commands, json.loads(done.stdout), strict=True)
    ]


@functools.cache
def flowtrace_table(commands: tuple[tuple[str, ...], ...]) -> dict[tuple[str, ...], Ran]:
    """:func:`flowtrace_commands` of a parametrized test's whole table, run
    once (by its first case), each case then reading its own command's result."""
    return dict(zip(commands, flowtrace_commands(commands), strict=True))
