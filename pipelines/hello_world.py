"""Lesson 1, hello_world: "Hello, World!" for each new process.

As in the tutorial, the BPF program prints with bpf_trace_printk and the
lines are read back from trace_pipe (a private tracefs instance, so other
programs' lines are neither shown nor taken from them). The tutorial's
kprobe on sys_clone becomes the entries of clone/clone3/fork/vfork, through
whichever attach point this kernel has.

    $ flowtrace run pipelines/hello_world.py     # ls; sh -c true in another shell
              run.sh-27153   [000] ...21 2732.731102: Hello, World!
              run.sh-27153   [000] ...21 2732.733117: Hello, World!
                bash-27170   [001] ...21 2733.036688: Hello, World!
                bash-27170   [001] ...21 2733.037874: Hello, World!
"""

from flowtrace.sinks.console import ConsoleSink
from flowtrace.sources.processes import clone_messages
from flowtrace.trace_pipe import TraceFields


def trace_line(e: TraceFields) -> str:
    return f"{e.task:>16}-{e.pid:<7} [{e.cpu:03}] {e.flags} {e.ts:.6f}: {e.msg}"


pipeline = clone_messages("Hello, World!") | ConsoleSink(line=trace_line)
