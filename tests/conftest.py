"""Test set-up: kernel tests need root and a BPF-capable kernel.

Kernel tests (marked ``kernel``) skip where BPF cannot be used, unless
FLOWTRACE_REQUIRE_KERNEL=1 (as in CI), where they fail instead. Every kernel
test is checked afterwards for BPF objects or attachments it left open, and
for probe events left registered in tracefs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_KERNEL = os.environ.get("FLOWTRACE_REQUIRE_KERNEL") == "1"
PROBE_EVENT_FILES = [
    Path("/sys/kernel/debug/tracing/uprobe_events"),
    Path("/sys/kernel/debug/tracing/kprobe_events"),
]


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (bash scripts/setup.sh)"
    from flowtrace import kernel

    features = kernel.features()
    for name in ("bpf", "tracepoints"):
        if not features[name].available:
            return f"{name}: {features[name].detail}"
    if not Path("/sys/kernel/debug/tracing/events").is_dir():
        return "tracefs is not mounted under /sys/kernel/debug"
    return None


def _kernel_handles() -> list[str]:
    """This process's open BPF objects and perf events (an attachment is one)."""
    fds = Path("/proc/self/fd")
    kinds = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(("anon_inode:bpf", "anon_inode:[perf_event]", "anon_inode:btf")):
            kinds.append(target)
    return sorted(kinds)


def _probe_events() -> list[str]:
    """Probe events bcc registered in tracefs (named ``..._bcc_<pid>``) for this
    process or for one that no longer exists: leaks of ours, not of a test
    run beside this one."""
    ours = []
    for f in PROBE_EVENT_FILES:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            owner = re.search(r"_bcc_(\d+)", line)
            if owner and (int(owner.group(1)) == os.getpid() or not _alive(int(owner.group(1)))):
                ours.append(line)
    return ours


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture(autouse=True)
def _kernel_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("kernel") is None:
        yield
        return
    reason = _kernel_unavailable()
    if reason is not None:
        if REQUIRE_KERNEL:
            pytest.fail(f"kernel path broken: {reason}")
        pytest.skip(reason)
    handles_before = _kernel_handles()
    events_before = _probe_events()
    yield
    # Per process, so parallel test runs cannot disturb it: a program or an
    # attachment still open here is one this test left behind.
    assert _kernel_handles() == handles_before, "BPF programs, maps or attachments left open"
    assert _probe_events() == events_before, "probe events left registered in tracefs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
