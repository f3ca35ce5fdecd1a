"""Alternatives that cannot attach on this kernel still build and load.

This kernel has no kprobes, so the lessons run on tracepoints here; the
tutorial's kprobe alternatives are what users' kernels pick. Each one is
compiled and loaded here (the kprobe program type loads; only attaching
fails), so a typo in them fails the tests and not a user's run.
"""

from __future__ import annotations

from itertools import repeat
from pathlib import Path

import pytest

from flowtrace import Kprobe, Kretprobe
from flowtrace.loader import load_pipeline
from flowtrace.plan import Choice

pytestmark = pytest.mark.kernel

# lesson -> how many kprobe/kretprobe alternatives its probes declare
KPROBE_ALTERNATIVES = {
    "hello_world.py": 1,  # the clone-family syscall functions
    "sync_timing.py": 1,
    # issue: blk_start_request + blk_mq_start_request, or blk_mq_start_request;
    # completion: blk_account_io_done or __blk_account_io_done
    "disksnoop.py": 4,
    "sync_perf_output.py": 1,
    "vfsreadlat.py": 2,  # vfs_read entry and return
    "urandomread.py": 2,  # urandom_read_iter, urandom_read returns
}
# lessons written with typed sources over tracepoints (or USDT, or uprobes),
# which every kernel has: no kprobe alternative to check
TYPED = {
    "sys_sync.py",
    "sync_count.py",
    "hello_fields.py",
    "hello_perf_output.py",
    "bitehist.py",
    "disklatency.py",
    "disksnoop_tp.py",
    "nodejs_http_server.py",
    "task_switch.py",
}

# network lessons: TCP tracepoints only, or programs on an interface (XDP, a
# socket filter), which have no kprobe alternative
NETWORK = {
    "tcp_lifecycle.py",
    "tcpconnect_accept.py",
    "tcp_retransmits.py",
    "http_filter.py",
    "xdp_drop_count.py",
}


@pytest.mark.parametrize(("path", "expected"), sorted(KPROBE_ALTERNATIVES.items()))
def test_kprobe_alternatives_compile_and_load_here(path: str, expected: int) -> None:
    from bcc import BPF

    source = load_pipeline(f"pipelines/{path}").source
    loaded = 0
    for probe in source.probes:  # type: ignore[attr-defined]
        for alternative, scheme in zip(
            probe.alternatives, probe.schemes or repeat(""), strict=False
        ):
            if not all(isinstance(point, (Kprobe, Kretprobe)) for point in alternative):
                continue
            program = source.program([Choice(probe, alternative, (), scheme)])  # type: ignore[attr-defined]
            bpf = BPF(text=program.text.encode(), cflags=list(source.cflags))  # type: ignore[attr-defined]
            try:
                for _, fn in program.entries:
                    assert bpf.load_func(fn.encode(), BPF.KPROBE).fd >= 0
            finally:
                bpf.cleanup()
            loaded += 1
    assert loaded == expected


def test_every_lesson_with_kernel_functions_is_covered() -> None:
    lessons = {p.name for p in Path("pipelines").glob("[!_]*.py")}
    without = TYPED | NETWORK | {"strlen_count.py"}  # no kprobes
    without.add("fleet_disklatency.py")  # not a lesson: its agent's probes are disklatency's
    assert lessons - without == set(KPROBE_ALTERNATIVES)
