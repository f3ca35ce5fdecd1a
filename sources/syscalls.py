"""Calls of individual syscalls."""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import ktime_ns, task_comm, task_pid
from flowtrace.probes import Probe, syscall_entry

__all__ = ["SyncCall", "sync_calls"]


class SyncCall(Event, frozen=True):
    """A process called sync(2)."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm


def sync_calls(*, transport: str = "auto") -> KernelSource[SyncCall]:
    """Entry of sync(2)."""
    return KernelSource(
        SyncCall,
        Probe("entry of sync(2)", *syscall_entry("sync")),
        name="sync",
        transport=transport,
    )
