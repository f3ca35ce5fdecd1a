"""Process creation: every fork, vfork, clone and clone3 call, printed from
the kernel as the tutorial's first lesson does."""

from __future__ import annotations

import json

from flowtrace.probes import Probe, syscall_entry_points
from flowtrace.trace_pipe import TracePipeSource

__all__ = ["CREATION_SYSCALLS", "clone_messages"]

CREATION_SYSCALLS = ("clone", "clone3", "fork", "vfork")


def clone_messages(message: str) -> TracePipeSource:
    """``message`` printed with ``bpf_trace_printk`` at each entry of
    clone/clone3/fork/vfork (glibc's fork() and posix_spawn use clone3 or
    clone, so every new process and thread is seen once), read back from
    trace_pipe (the tutorial's first lesson); each line says who called, on
    which CPU and when."""
    if "%" in message or "\n" in message:
        raise ValueError("the message is printed as is: no % conversions and no newline")
    literal = json.dumps(message)  # a C string literal for any printable text
    probe = Probe(
        "entry of clone/clone3/fork/vfork",
        *syscall_entry_points(*CREATION_SYSCALLS),
        body=f"ft_printk({literal});",
    )
    return TracePipeSource(probe, name="clones")
