"""Where time goes, by stack: CPU samples (bcc's profile) and time blocked
off the CPU (bcc's offcputime), summed per stack in the kernel.

Both emit :class:`~flowtrace.stack_counts.StackCount` records: one per
(process, user stack, kernel stack) with what was added to it, read when
tracing stops (see :mod:`flowtrace.stack_counts`); fold them with
:class:`~flowtrace.sinks.stacks.FoldedSink` or draw them with
:class:`~flowtrace.sinks.stacks.FlameGraphSink`.
"""

from __future__ import annotations

from flowtrace.errors import PipelineDefinitionError
from flowtrace.kernel_source import KernelSource
from flowtrace.probes import Param, PerfEvent, Probe, Tracepoint
from flowtrace.stack_counts import StackCount, StackCounts

__all__ = ["cpu_samples", "off_cpu_time"]

_MAX_BLOCKED = 10240
"""Threads off the CPU followed at once by off_cpu_time."""


def _pid_filter(pid: int | None, variable: str) -> str:
    if pid is None:
        return ""
    if not isinstance(pid, int) or not 0 < pid < 1 << 22:
        raise PipelineDefinitionError(f"pid must be a process id (a positive integer), not {pid!r}")
    return f"if ({variable} != {pid})\n    return 0;\n"


def cpu_samples(
    frequency: int = 49,
    *,
    pid: int | None = None,
    include_idle: bool = False,
    user: bool = True,
    kernel: bool = True,
    period: float | None = None,
) -> KernelSource[StackCount]:
    """Stacks of what runs on each CPU, sampled ``frequency`` times a second
    per CPU (a CPU clock perf event), counted per stack in the kernel. Only
    process ``pid`` when given; the idle task (pid 0) only with
    ``include_idle``; ``user``/``kernel``: which stacks to keep."""
    if not isinstance(frequency, int) or not 1 <= frequency <= 10000:
        raise PipelineDefinitionError(f"frequency must be 1 to 10000 Hz, not {frequency!r}")
    body = "u32 tgid = bpf_get_current_pid_tgid() >> 32;\n"
    if not include_idle:
        body += "if (tgid == 0)\n    return 0;\n"
    body += _pid_filter(pid, "tgid") + "ft_count_stack(ctx, 1);"
    probe = Probe(
        f"CPU samples at {frequency} Hz", PerfEvent(sample_freq=frequency), body=body, emits=False
    )
    output = StackCounts(period=period, user=user, kernel=kernel)
    return KernelSource(StackCount, probe, name="cpu_samples", output=output)


_BLOCKED = f"""\
struct ft_blocked {{
    u64 since;
    struct ft_stack_key key;
}};

BPF_HASH(ft_blocked, u32, struct ft_blocked, {_MAX_BLOCKED});  // thread -> when and where it left
"""


def off_cpu_time(
    *,
    pid: int | None = None,
    min_us: int = 1,
    max_us: int | None = None,
    user: bool = True,
    kernel: bool = True,
    period: float | None = None,
) -> KernelSource[StackCount]:
    """Time threads spend off the CPU (blocked or waiting for it), in
    microseconds, summed per stack where they left it: at each
    sched:sched_switch the thread leaving notes the time and its stacks; when
    it is switched back in, the time since is added to those stacks. Only
    process ``pid`` when given; spells shorter than ``min_us`` or longer than
    ``max_us`` are left out (bcc's offcputime defaults: 1 us, no maximum)."""
    _pid_filter(pid, "")  # checks it
    for name, value in (("min_us", min_us), ("max_us", max_us)):
        if value is not None and (not isinstance(value, int) or not 0 <= value < 1 << 63):
            raise PipelineDefinitionError(f"{name} must be microseconds (an integer >= 0)")
    keep = "1" if pid is None else f"blocked.key.pid == {pid}"
    longer = f" && us <= {max_us}" if max_us is not None else ""
    body = f"""\
u64 now = bpf_ktime_get_ns();
if (prev_pid != 0) {{
    struct ft_blocked blocked = {{.since = now}};
    ft_stack_ids(ctx, &blocked.key);
    if ({keep} && ft_blocked.update(&prev_pid, &blocked) != 0)
        ft_count_lost();
}}
struct ft_blocked *back = ft_blocked.lookup(&next_pid);
if (!back)
    return 0;
u64 us = (now - back->since) / 1000;
if (us >= {min_us}{longer})
    ft_add_to_stack(&back->key, us);
ft_blocked.delete(&next_pid);"""
    probe = Probe(
        "threads switched out and back in",
        Tracepoint("sched", "sched_switch"),
        body=body,
        params=[Param("prev_pid", "u32"), Param("next_pid", "u32")],
        emits=False,
    )
    output = StackCounts(period=period, user=user, kernel=kernel)
    return KernelSource(StackCount, probe, prelude=_BLOCKED, name="off_cpu_time", output=output)
