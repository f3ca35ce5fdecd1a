"""Known workloads for kernel tests: processes whose exact syscalls we know."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

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

    def __init__(self, body: str, python: str = PYTHON) -> None:
        self.process = subprocess.Popen(
            [python, "-c", _GATED.format(body=body)], stdin=subprocess.PIPE
        )
        self.pid = self.process.pid

    def go(self, timeout: float = 60) -> None:
        """Release it once it waits in read(2) on its standard input (so the
        go line wakes it, as tests counting wake-ups expect), then wait for it."""
        assert self.process.stdin is not None
        self._wait_reading_stdin(timeout)
        self.process.stdin.write(b"go\n")
        self.process.stdin.close()
        assert self.process.wait(timeout) == 0

    def _wait_reading_stdin(self, timeout: float) -> None:
        syscall = Path(f"/proc/{self.pid}/syscall")
        deadline = time.monotonic() + timeout
        # x86-64: read(2) is syscall 0, its first argument the descriptor 0
        while not syscall.read_text().startswith("0 0x0 "):
            assert time.monotonic() < deadline, f"pid {self.pid} never read its stdin"
            time.sleep(0.001)  # poll interval of this bounded wait


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


PROGRAMS = Path(__file__).with_name("programs")


@functools.cache
def _build_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="flowtrace-programs-"))


@functools.cache
def program(name: str, *flags: str) -> str:
    """The test program ``tests/programs/NAME.c``, compiled once per session
    (with gcc ``flags`` besides ``-O2 -pthread``)."""
    built = _build_dir() / name
    try:
        subprocess.run(
            ["gcc", "-O2", "-pthread", *flags, "-o", str(built), str(PROGRAMS / f"{name}.c")],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise AssertionError(
            "gcc is needed for tests/programs: bash scripts/setup.sh --test"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"cannot build {name}.c: {exc.stderr}") from None
    return str(built)


class GatedProgram:
    """A command that waits for a line on stdin before doing its work.

    ``lines`` are the first lines it prints before waiting (thread ids).
    """

    def __init__(self, argv: Sequence[str], lines: int = 0) -> None:
        self.process = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.process.pid
        assert self.process.stdout is not None
        self.lines = [self.process.stdout.readline().strip() for _ in range(lines)]

    def go(self, timeout: float = 60) -> str:
        """Release it and wait; returns the rest of what it printed."""
        out, _ = self.process.communicate("go\n", timeout)
        assert self.process.returncode == 0, self.process.returncode
        return out


def http_requests(paths: Sequence[str]) -> GatedProgram:
    """Fires USDT node:http__server__request once per path (argument 6)."""
    return GatedProgram([program("http_requests"), *paths])


def strlen_caller(calls: dict[str, int]) -> GatedProgram:
    """Calls libc strlen() ``calls[s]`` times on each string ``s``."""
    return GatedProgram([program("strlen_calls"), *(f"{n}:{s}" for s, n in calls.items())])


def lcg_sizes(seed: int, count: int, most: int) -> list[int]:
    """The sizes ``sized_writes(seed, count, most)`` writes, in order."""
    sizes = []
    state = seed
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & (1 << 64) - 1
        sizes.append((state >> 33) % most + 1)
    return sizes


def sized_writes(seed: int, count: int, most: int) -> GatedProgram:
    """Writes to /dev/null ``count`` times, sizes :func:`lcg_sizes` (1..most bytes)."""
    return GatedProgram([program("sized_writes"), str(seed), str(count), str(most)])


def busy_getppid(seconds: float) -> GatedProgram:
    """Calls getppid() without pause for ``seconds``; ``go()`` returns how many calls."""
    return GatedProgram([program("busy_getppid"), str(seconds)])


def ping_pong(rounds: int) -> GatedProgram:
    """Two threads on one CPU handing a token back and forth; ``lines`` holds their tids."""
    return GatedProgram([program("ping_pong"), str(rounds)], lines=2)


def gc_collector(generations: Sequence[int]) -> Gated:
    """A python3.11 process collecting each generation in turn with gc.collect,
    automatic collection off and no collection at exit: one python:gc__start
    per element."""
    calls = "".join(f"gc.collect({g})\n" for g in generations)
    return Gated(f"import gc\ngc.disable()\n{calls}os._exit(0)\n", python="/usr/bin/python3.11")


def file_reader(path: str, size: int, count: int) -> Gated:
    """Reads ``size`` bytes from the start of ``path`` ``count`` times, one read(2) each."""
    return Gated(
        f"fd = os.open({path!r}, os.O_RDONLY)\n"
        f"for _ in range({count}):\n"
        f"    assert len(os.read(fd, {size})) == {size}\n"
        "    os.lseek(fd, 0, os.SEEK_SET)\n"
    )


def syncs_apart(count: int, gap: float) -> list[int]:
    """Run ``sync`` ``count`` times, ``gap`` seconds between the end of one and the next."""
    pids = []
    for i in range(count):
        if i:
            time.sleep(gap)  # the workload's own pacing
        proc = subprocess.Popen(["sync"])
        pids.append(proc.pid)
        assert proc.wait(60) == 0
    return pids


def dd(*operands: str) -> int:
    """Run dd with ``operands``; returns its pid."""
    proc = subprocess.Popen(["dd", *operands, "status=none"])
    assert proc.wait(60) == 0
    return proc.pid


@contextlib.contextmanager
def loop_device(size_mib: int = 16) -> Iterator[tuple[str, int]]:
    """A loop block device over a temporary file: (path, kernel device number)."""
    with tempfile.NamedTemporaryFile(prefix="flowtrace-loop-") as backing:
        backing.truncate(size_mib << 20)
        device = subprocess.run(
            ["losetup", "--find", "--show", backing.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        try:
            rdev = os.stat(device).st_rdev
            yield device, os.major(rdev) << 20 | os.minor(rdev)
        finally:
            subprocess.run(["losetup", "--detach", device], check=True)


class Spinner:
    """tests/programs/spin.c: spins ``seconds`` in its function spin_here
    once released, then stays alive (its stacks can still be named) until
    :meth:`end`."""

    def __init__(self, seconds: float) -> None:
        binary = program("spin", "-fno-omit-frame-pointer")
        self.process = subprocess.Popen(
            [binary, str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.process.pid

    def spin(self) -> None:
        """Release it and wait until it has spun."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "spun\n"

    def end(self) -> None:
        self.process.communicate(timeout=10)
        assert self.process.returncode == 0
