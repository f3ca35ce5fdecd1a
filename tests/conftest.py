"""Test set-up: kernel tests need root and a BPF-capable kernel.

Kernel tests (marked ``kernel``) skip where BPF cannot be used, unless
FLOWTRACE_REQUIRE_KERNEL=1 (as in CI), where they fail instead. Every kernel
test is checked afterwards for BPF programs or probe events it left behind.
"""

from __future__ import annotations

import os
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


def _probe_events() -> list[str]:
    return [line for f in PROBE_EVENT_FILES if f.exists() for line in f.read_text().splitlines()]


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
    from flowtrace.kernel import bpf_program_ids

    programs_before = bpf_program_ids()
    events_before = _probe_events()
    yield
    leaked = bpf_program_ids() - programs_before
    assert not leaked, f"BPF programs left loaded: {sorted(leaked)}"
    assert _probe_events() == events_before, "probe events left registered in tracefs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
