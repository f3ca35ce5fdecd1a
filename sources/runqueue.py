"""How long threads wait to run once runnable (bcc's runqlat), from the
scheduler's tracepoints.

A thread is queued when it is woken (``sched:sched_wakeup``,
``sched_wakeup_new``) or when it leaves the CPU still runnable (preempted:
``sched:sched_switch`` with a ``prev_state`` of R); the kernel keeps that
time per thread and, when ``sched_switch`` puts the thread on a CPU,
reports the wait. Threads queued before tracing began are not reported
for that wait.
"""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import ktime_ns, u8, u32, u64
from flowtrace.probes import Param, Probe, Tracepoint

__all__ = ["RunQueueWait", "run_queue_waits"]


class RunQueueWait(Event, frozen=True):
    """Thread ``tid`` waited ``latency_ns`` from being queued to running;
    ``woken``: 1 if it was queued by a wakeup, 0 if it had been preempted."""

    ts: ktime_ns
    tid: u32
    latency_ns: u64
    woken: u8


_QUEUED = """\
struct ft_queued {
    u64 since;
    u8 woken;
};

BPF_HASH(ft_queued, u32, struct ft_queued, 10240);  // thread -> when it became runnable

static __always_inline void ft_queue(u32 tid, u8 woken) {
    struct ft_queued queued = {.since = bpf_ktime_get_ns(), .woken = woken};
    if (tid != 0 && ft_queued.update(&tid, &queued) != 0)
        ft_count_lost();
}
"""

_TASK_REPORT = 0x7F  # the task states the tracepoint reports; none of them: runnable

_SWITCH = f"""\
if ((prev_state & {_TASK_REPORT:#x}) == 0)
    ft_queue(prev_pid, 0);  // preempted: back in the queue
struct ft_queued *queued = ft_queued.lookup(&next_pid);
if (!queued)
    return 0;
e.tid = next_pid;
e.latency_ns = bpf_ktime_get_ns() - queued->since;
e.woken = queued->woken;
ft_queued.delete(&next_pid);"""


def run_queue_waits(*, transport: str = "auto") -> KernelSource[RunQueueWait]:
    """One :class:`RunQueueWait` each time a queued thread gets a CPU."""
    woken = Probe(
        "threads woken",
        (Tracepoint("sched", "sched_wakeup"), Tracepoint("sched", "sched_wakeup_new")),
        body="ft_queue(pid, 1);",
        params=[Param("pid", "u32")],
        emits=False,
    )
    switched = Probe(
        "context switches",
        Tracepoint("sched", "sched_switch"),
        body=_SWITCH,
        params=[Param("prev_pid", "u32"), Param("prev_state", "s64"), Param("next_pid", "u32")],
    )
    return KernelSource(
        RunQueueWait, woken, switched, prelude=_QUEUED, name="run_queue", transport=transport
    )
