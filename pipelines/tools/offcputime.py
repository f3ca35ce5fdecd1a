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

from flowtrace import Pipeline
from flowtrace.arguments import Arguments, positive_int
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.stack_lines import stack_block
from flowtrace.sinks.stacks import FoldedSink
from flowtrace.sources.profile import off_cpu_time

USAGE = "[-p PID] [-U | -K] [-f] [-m MIN_US] [-M MAX_US]"


def pipeline(args: list[str]) -> Pipeline:
    options = Arguments("pipelines/tools/offcputime.py", USAGE)
    options.add_argument("-p", "--pid", type=positive_int)
    only = options.add_mutually_exclusive_group()
    only.add_argument("-U", "--user-stacks-only", action="store_true")
    only.add_argument("-K", "--kernel-stacks-only", action="store_true")
    options.add_argument("-f", "--folded", action="store_true")
    options.add_argument("-m", "--min-block-time", type=positive_int, default=1)
    options.add_argument("-M", "--max-block-time", type=positive_int)
    given = options.parse(args)
    blocked = off_cpu_time(
        pid=given.pid,
        min_us=given.min_block_time,
        max_us=given.max_block_time,
        user=not given.kernel_stacks_only,
        kernel=not given.user_stacks_only,
    )
    if given.folded:
        return blocked | FoldedSink()
    which = "user" if given.user_stacks_only else "kernel" if given.kernel_stacks_only else ""
    header = (
        f"Tracing off-CPU time (us) of {f'PID {given.pid}' if given.pid else 'all threads'}"
        f" by {which or 'user + kernel'} stack... Hit Ctrl-C to end."
    )
    return blocked | ConsoleSink(line=stack_block, header=header)
