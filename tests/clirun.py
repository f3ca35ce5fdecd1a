"""Running the ``flowtrace`` command in tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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
import json, os, sys, tempfile
sys.argv = ["flowtrace"]
from flowtrace.cli import main
results = []
for argv in json.load(sys.stdin):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
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
        results.append([code, out.read().decode(), err.read().decode()])
print(json.dumps(results))
"""


def flowtrace_commands(
    commands: list[list[str]], cwd: Path, **popen: Any
) -> list[subprocess.CompletedProcess[str]]:
    """Run each ``flowtrace ARGS`` of ``commands`` in turn through
    :func:`flowtrace.cli.main`, all in one new process (one start-up instead
    of one per command: the checks here are about what each command does,
    as the user ``popen`` may name, not about starting Python). Each gets its
    own exit status and everything written to descriptors 1 and 2 while it
    ran. Anything the process writes besides (at start-up) fails the call."""
    done = subprocess.run(
        [sys.executable, "-c", _COMMANDS_IN_ONE_PROCESS],
        input=json.dumps(commands),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60 + 10 * len(commands),
        **popen,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [
        subprocess.CompletedProcess([FLOWTRACE, *argv], code, out, err)
        for argv, (code, out, err) in zip(commands, json.loads(done.stdout), strict=True)
    ]
