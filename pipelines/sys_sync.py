"""Lesson 2, sys_sync: print a line whenever sync(2) is called.

The tutorial's kprobe on sys_sync becomes the syscalls:sys_enter_sync
tracepoint, which every kernel has (kprobes are not even built into some).

    $ flowtrace run pipelines/sys_sync.py      # sync; sync
    Tracing sys_sync()... Ctrl-C to end.
    sys_sync() called
    sys_sync() called
"""

from flowtrace import syscall_entry
from flowtrace.sinks.console import ConsoleSink

pipeline = syscall_entry("sync") | ConsoleSink(
    line=lambda _: "sys_sync() called", header="Tracing sys_sync()... Ctrl-C to end."
)
