"""The workload: building ``loadgen.c`` (cached) and driving one run of it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.workload import LOADGEN_COMM

__all__ = ["Loadgen", "LoadgenResult", "build"]

SOURCE = Path(__file__).with_name("loadgen.c")


def build(cache: Path) -> Path:
    """The load generator's executable, compiled with gcc once per source version."""
    text = SOURCE.read_bytes()
    binary = cache / hashlib.sha256(text).hexdigest()[:16] / LOADGEN_COMM
    if binary.exists():
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the load generator (apt-get install gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(partial), str(SOURCE)], check=True
    )
    partial.replace(binary)
    return binary


@dataclass(frozen=True)
class LoadgenResult:
    """What one run of the load generator reports about itself."""

    generated: int
    loop_s: float
    cpu_s: float
    phases: tuple[tuple[int, int], ...] = ()
    """Each phase's start and end, CLOCK_MONOTONIC nanoseconds."""


class Loadgen:
    """One load generator process, started and waiting for :meth:`go`.

    ``count`` calls at ``rate`` per second (0: as fast as it can), then
    each ``(count, rate)`` of ``then``, 0.25 s apart."""

    def __init__(
        self, binary: Path, count: int, rate: float = 0.0, then: Sequence[tuple[int, float]] = ()
    ) -> None:
        argv = [str(binary), str(count)] + ([repr(rate)] if rate > 0 or then else [])
        argv += [str(arg) for phase in then for arg in (phase[0], repr(phase[1]))]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        word, pid = self.process.stdout.readline().split()
        if word != "ready":
            raise RuntimeError(f"load generator said {word!r}, not ready")
        self.pid = int(pid)

    def go(self) -> None:
        """Release it: it starts making syscalls at once."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def wait(self, timeout: float) -> LoadgenResult:
        """Wait until it has made every syscall and exited."""
        line, _ = self.process.communicate(timeout=timeout)
        code = self.process.returncode
        if code != 0 or not line:
            raise RuntimeError(f"load generator failed (exit status {code})")
        report = json.loads(line)
        return LoadgenResult(
            report["generated"],
            report["loop_ns"] / 1e9,
            report["cpu_ns"] / 1e9,
            tuple((start, end) for start, end in report["phases"]),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
