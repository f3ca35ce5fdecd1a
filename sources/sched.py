"""Context switches: which task the CPU switched from and to.

The tutorial's task_switch attached a kprobe to ``finish_task_switch`` (which
recent compilers rename ``finish_task_switch.isra.0``) and read the pid of
``prev`` from its task_struct; the ``sched:sched_switch`` tracepoint gives
both pids without dereferencing anything and is the fallback.
"""

from __future__ import annotations

import os

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import cpu_id, u32
from flowtrace.probes import Fentry, Kprobe, Param, Probe, Tracepoint

__all__ = ["TaskSwitch", "task_switches"]

_PRELUDE = """\
static __always_inline u32 ft_task_pid(void *task) {
    int pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), (char *)task + offsetof(struct task_struct, pid));
    return pid;
}
"""

_CURRENT = "(u32)bpf_get_current_pid_tgid()"


class TaskSwitch(Event, frozen=True):
    """CPU ``cpu`` switched from thread ``prev_pid`` to thread ``curr_pid``
    (kernel pids, i.e. thread ids; 0 is the idle task)."""

    prev_pid: u32
    curr_pid: u32
    cpu: cpu_id


def task_switches(*, transport: str = "auto") -> KernelSource[TaskSwitch]:
    """Every context switch, with the thread ids on both sides, except those
    to and from this process's main thread: each event sent wakes that
    thread to read it, and counting its own wake-ups would feed back into
    what it counts (tens of thousands of switches a second on an idle
    machine)."""
    own = os.getpid()
    probe = Probe(
        "a context switch",
        Kprobe(
            function="finish_task_switch",
            fields={"prev_pid": "ft_task_pid((void *)PT_REGS_PARM1(ctx))", "curr_pid": _CURRENT},
            reads_kernel_structs=True,
        ),
        Fentry(
            function="finish_task_switch",
            signature=("struct task_struct *prev",),
            fields={"prev_pid": "prev->pid", "curr_pid": _CURRENT},
            reads_kernel_structs=True,
        ),
        Tracepoint("sched", "sched_switch", fields={"curr_pid": "args->next_pid"}),
        body=f"""\
if (prev_pid == {own} || curr_pid == {own})
    return 0;
e.prev_pid = prev_pid;
e.curr_pid = curr_pid;""",
        params=[Param("prev_pid", "u32"), Param("curr_pid", "u32")],
    )
    return KernelSource(
        TaskSwitch, probe, prelude=_PRELUDE, name="task_switch", transport=transport
    )
