"""offcputime: where threads wait off the CPU, by stack (bcc's tools/offcputime).

    flowtrace run [--duration SECONDS] pipelines/tools/offcputime.py
        [-p PID] [-U | -K] [-f] [-m MIN_US] [-M MAX_US]

Microseconds threads spend off the CPU, summed per (process, user stack,
kernel stack) where they left it, from sched:sched_switch (bcc's original
uses a kprobe on finish_task_switch, which this kernel lacks, and dies
here). Printed when tracing ends, lowest first, as bcc prints them; -f
prints folded stacks instead; -m / -M leave out shorter / longer spells.

    $ flowtrace run pipelines/tools/offcputime.py -p 24269     # python3: 4 x time.sleep(0.1)
    Tracing off-CPU time (us) of PID 24269 by user + kernel stack... Hit Ctrl-C to end.
        __traceiter_sched_switch
        __schedule
        schedule
        irqentry_exit_to_user_mode
        asm_sysvec_apic_timer_interrupt
        0x50a2e7
        -                python3 (24269)
            69

        __traceiter_sched_switch
        __schedule
        schedule
        do_nanosleep
        hrtimer_nanosleep
        common_nsleep_timens
        __x64_sys_clock_nanosleep
        do_syscall_64
        entry_SYSCALL_64_after_hwframe
        0x7f4c15610503
        -                python3 (24269)
            402255
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.stack_lines import stack_block
from flowtrace.sinks.stacks import FoldedSink
from flowtrace.sources.profile import off_cpu_time


def pipeline(
    *,
    pid: Annotated[Positive | None, Option("-p")] = None,
    user_stacks_only: Annotated[bool, Option("-U")] = False,
    kernel_stacks_only: Annotated[bool, Option("-K")] = False,
    folded: Annotated[bool, Option("-f")] = False,
    min_block_time: Annotated[Positive, Option("-m", metavar="MIN_US")] = 1,
    max_block_time: Annotated[Positive | None, Option("-M", metavar="MAX_US")] = None,
) -> Pipeline:
    """Microseconds off the CPU per (process, user stack, kernel stack), as bcc's offcputime.

    Args:
        pid: only this process
        user_stacks_only: only user stacks (not with -K)
        kernel_stacks_only: only kernel stacks (not with -U)
        folded: print folded stacks (flamegraph.pl's input)
        min_block_time: leave out spells off the CPU shorter than this many microseconds
        max_block_time: leave out spells off the CPU longer than this many microseconds
    """
    if user_stacks_only and kernel_stacks_only:
        raise ValueError("-U (user stacks only) and -K (kernel stacks only) exclude each other")
    blocked = off_cpu_time(
        pid=pid,
        min_us=min_block_time,
        max_us=max_block_time,
        user=not kernel_stacks_only,
        kernel=not user_stacks_only,
    )
    if folded:
        return blocked | FoldedSink()
    which = "user" if user_stacks_only else "kernel" if kernel_stacks_only else ""
    header = (
        f"Tracing off-CPU time (us) of {f'PID {pid}' if pid else 'all threads'}"
        f" by {which or 'user + kernel'} stack... Hit Ctrl-C to end."
    )
    return blocked | ConsoleSink(line=stack_block, header=header)
