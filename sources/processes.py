"""Process creation: every fork, vfork, clone and clone3 call."""

from __future__ import annotations

import json

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import cpu_id, ktime_ns, task_comm, task_pid
from flowtrace.probes import Probe, syscall_entry_points
from flowtrace.trace_pipe import TracePipeSource

__all__ = ["CREATION_SYSCALLS", "Clone", "clone_messages", "clones"]

CREATION_SYSCALLS = ("clone", "clone3", "fork", "vfork")


class Clone(Event, frozen=True):
    """A task asked the kernel for a new process or thread (seen in the caller)."""

    ts: ktime_ns
    pid: task_pid
    cpu: cpu_id
    comm: task_comm


def _creation_probe(body: str = "") -> Probe:
    return Probe(
        "entry of clone/clone3/fork/vfork", *syscall_entry_points(*CREATION_SYSCALLS), body=body
    )


def clones(*, transport: str = "auto") -> KernelSource[Clone]:
    """Entry of clone/clone3/fork/vfork: glibc's fork() and posix_spawn use
    clone3 or clone, so every new process and thread is seen once."""
    return KernelSource(Clone, _creation_probe(), name="clones", transport=transport)


def clone_messages(message: str) -> TracePipeSource:
    """``message`` printed with ``bpf_trace_printk`` at each entry of
    clone/clone3/fork/vfork, read back from trace_pipe (the tutorial's first
    lessons); each line says who called, on which CPU and when."""
    if "%" in message or "\n" in message:
        raise ValueError("the message is printed as is: no % conversions and no newline")
    literal = json.dumps(message)  # a C string literal for any printable text
    return TracePipeSource(_creation_probe(f"ft_printk({literal});"), name="clones")
