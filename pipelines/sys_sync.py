"""Lesson 2, sys_sync: print a line whenever sync(2) is called.

$ flowtrace run pipelines/sys_sync.py
Tracing sys_sync()... Ctrl-C to end.
sys_sync() called
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.syscalls import SyncCall, sync_calls


def called(_: SyncCall) -> str:
    return "sys_sync() called"


pipeline = sync_calls() | ConsoleSink(line=called, header="Tracing sys_sync()... Ctrl-C to end.")
