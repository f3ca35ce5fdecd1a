"""Lesson 2, sys_sync: print a line whenever sync(2) is called.

The tutorial's kprobe on sys_sync becomes the entry of sync(2), through
whichever attach point this kernel has (fentry, the syscall function's
kprobe, or the syscalls:sys_enter_sync tracepoint used here).

    $ flowtrace run pipelines/sys_sync.py      # sync; sync
    Tracing sys_sync()... Ctrl-C to end.
    sys_sync() called
    sys_sync() called
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.syscalls import SyncCall, sync_calls


def called(_: SyncCall) -> str:
    return "sys_sync() called"


pipeline = sync_calls() | ConsoleSink(line=called, header="Tracing sys_sync()... Ctrl-C to end.")
