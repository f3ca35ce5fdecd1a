"""Calls of individual syscalls: sync(2), and syncs in quick succession.

The quick-sync sources keep their state in the kernel as the tutorial's
sync_timing does: a BPF hash holds the time of the last sync; only syncs
less than a second after the previous one reach userspace. (Lesson 5,
which also counts every sync, is a typed source and operators the planner
places in the kernel: see pipelines/sync_count.py.)
"""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import ktime_ns, task_comm, task_pid, u64
from flowtrace.probes import Probe, syscall_entry_points
from flowtrace.trace_pipe import TracePipeSource

__all__ = ["QUICK_NS", "QuickSync", "SyncCall", "quick_syncs", "quick_syncs_printed", "sync_calls"]

QUICK_NS = 1_000_000_000
"""Syncs closer than this (one second) to the previous one are reported."""

_STATE = "BPF_HASH(ft_sync_state, u64, u64, 1);  // key 0: last sync (ns)"

# C run at each sync: sets `quick` and `gap` (ns since the previous sync) and
# records this sync's time.
_LAST = """\
u64 last_key = 0, now = bpf_ktime_get_ns();
u64 *last = ft_sync_state.lookup(&last_key);
u64 gap = last ? now - *last : 0;
int quick = last && gap < QUICK_NS;
ft_sync_state.update(&last_key, &now);
"""


class SyncCall(Event, frozen=True):
    """A process called sync(2)."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm


class QuickSync(Event, frozen=True):
    """A sync(2) less than a second after the previous one, ``gap_ns`` later."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm
    gap_ns: u64


def _sync_probe(body: str = "") -> Probe:
    return Probe("entry of sync(2)", *syscall_entry_points("sync"), body=body)


def sync_calls(*, transport: str = "auto") -> KernelSource[SyncCall]:
    """Entry of sync(2)."""
    return KernelSource(SyncCall, _sync_probe(), name="sync", transport=transport)


def quick_syncs(*, transport: str = "auto") -> KernelSource[QuickSync]:
    """Syncs less than a second after the previous sync, through the ring
    (or perf) buffer; the last sync time is kept in the kernel."""
    body = _LAST + "if (!quick)\n    return 0;\ne.gap_ns = gap;"
    return KernelSource(
        QuickSync,
        _sync_probe(body),
        prelude=_STATE,
        name="quick_syncs",
        transport=transport,
        cflags=[f"-DQUICK_NS={QUICK_NS}ULL"],
    )


def quick_syncs_printed() -> TracePipeSource:
    """Syncs less than a second after the previous sync, printed with
    ``bpf_trace_printk`` as the tutorial's sync_timing does: the message is
    the gap in milliseconds."""
    body = _LAST + 'if (quick)\n    ft_printk("%llu", gap / 1000000);'
    return TracePipeSource(
        _sync_probe(body),
        prelude=_STATE,
        name="quick_syncs",
        cflags=[f"-DQUICK_NS={QUICK_NS}ULL"],
    )
