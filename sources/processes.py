"""Process creation: every fork, vfork, clone and clone3 call."""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import cpu_id, ktime_ns, task_comm, task_pid
from flowtrace.probes import Probe, syscall_entry

__all__ = ["Clone", "clones"]

CREATION_SYSCALLS = ("clone", "clone3", "fork", "vfork")


class Clone(Event, frozen=True):
    """A task asked the kernel for a new process or thread (seen in the caller)."""

    ts: ktime_ns
    pid: task_pid
    cpu: cpu_id
    comm: task_comm


def clones(*, transport: str = "auto") -> KernelSource[Clone]:
    """Entry of clone/clone3/fork/vfork: glibc's fork() and posix_spawn use
    clone3 or clone, so every new process and thread is seen once."""
    probe = Probe("entry of clone/clone3/fork/vfork", *syscall_entry(*CREATION_SYSCALLS))
    return KernelSource(Clone, probe, name="clones", transport=transport)
