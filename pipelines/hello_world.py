"""Lesson 1, hello_world: say "Hello, World!" whenever a process is created.

The tutorial attached a kprobe to sys_clone and printed through trace_pipe;
here the clone/clone3/fork/vfork entries are observed (fentry, kprobe or
tracepoint, whichever this kernel has) and each line shows who called.

    $ flowtrace run pipelines/hello_world.py
    flowtrace: clones: entry of clone/clone3/fork/vfork: tracepoint syscalls:sys_enter_clone + ...
               bash-3630    [001] 1176.183520: Hello, World!
              bash-3630    [001] 1176.184930: Hello, World!
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.processes import Clone, clones


def trace_line(e: Clone) -> str:
    return f"{e.comm:>16}-{e.pid:<7} [{e.cpu:03}] {e.ts / 1e9:.6f}: Hello, World!"


pipeline = clones() | ConsoleSink(line=trace_line)
