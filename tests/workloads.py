"""Known workloads for kernel tests: processes whose exact syscalls we know."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

PYTHON = "/usr/bin/python3" if sys.platform == "linux" else sys.executable

_GATED = """
import os, sys
sys.stdin.readline()
{body}
"""


class Gated:
    """A Python process that waits for a go signal, then runs ``body``.

    Its pid is known before it does anything, so a test can start tracing,
    then release it, and attribute events to it exactly.
    """

    def __init__(self, body: str) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-c", _GATED.format(body=body)], stdin=subprocess.PIPE
        )
        self.pid = self.process.pid

    def go(self, timeout: float = 60) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.close()
        assert self.process.wait(timeout) == 0


def forker(count: int) -> Gated:
    """Forks ``count`` children (each exits at once): ``count`` clone-family calls."""
    return Gated(
        f"for _ in range({count}):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        os._exit(0)\n"
        "    os.waitpid(child, 0)\n"
    )


def getppid_loop(count: int) -> Gated:
    return Gated(f"g = os.getppid\nfor _ in range({count}):\n    g()\n")


def run_syncs(count: int) -> list[int]:
    """Run ``sync`` ``count`` times; returns their pids."""
    pids = []
    for _ in range(count):
        proc = subprocess.Popen(["sync"])
        pids.append(proc.pid)
        assert proc.wait(60) == 0
    return pids


def run(cmd: Sequence[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
