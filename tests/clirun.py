"""Running the ``flowtrace`` command in tests."""

from __future__ import annotations

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
