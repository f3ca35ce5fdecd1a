"""profile: where the CPUs spend their time, by stack (bcc's tools/profile).

    flowtrace run [--duration SECONDS] pipelines/tools/profile.py [-F HZ] [-p PID] [-U | -K] [-f]

Each CPU sampled HZ times a second (default 49) by a perf event; samples
are counted per (process, user stack, kernel stack) in the kernel and
printed when tracing ends, lowest count first, as bcc prints them: kernel
frames, user frames, "-  comm (pid)", the count. -f prints folded stacks
(flamegraph.pl's input) instead; -U / -K keep only user / kernel stacks.

    $ flowtrace run pipelines/tools/profile.py -F 99 -p 24235     # tests/programs/spin.c
    Sampling at 99 Hertz of PID 24235 by user + kernel stack... Hit Ctrl-C to end.
        spin_here
        main
        0x7fcd36c8524a
        -                spin (24235)
            62

        spin_here
        main
        0x7fcd36c8524a
        -                spin (24235)
            86

    $ flowtrace run pipelines/tools/profile.py -F 99 -p 24250 -f
    spin;0x7f45304fa24a;main;spin_here 149
"""

from typing import Annotated

from flowtrace import Pipeline
from flowtrace.parameters import Option, Positive
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.stack_lines import stack_block
from flowtrace.sinks.stacks import FoldedSink
from flowtrace.sources.profile import cpu_samples


def pipeline(
    *,
    frequency: Annotated[Positive, Option("-F", metavar="HZ")] = 49,
    pid: Annotated[Positive | None, Option("-p")] = None,
    user_stacks_only: Annotated[bool, Option("-U")] = False,
    kernel_stacks_only: Annotated[bool, Option("-K")] = False,
    folded: Annotated[bool, Option("-f")] = False,
) -> Pipeline:
    """CPU samples per (process, user stack, kernel stack), as bcc's profile.

    Args:
        frequency: samples a second on each CPU
        pid: only this process
        user_stacks_only: only user stacks (not with -K)
        kernel_stacks_only: only kernel stacks (not with -U)
        folded: print folded stacks (flamegraph.pl's input)
    """
    if user_stacks_only and kernel_stacks_only:
        raise ValueError("-U (user stacks only) and -K (kernel stacks only) exclude each other")
    samples = cpu_samples(
        frequency, pid=pid, user=not kernel_stacks_only, kernel=not user_stacks_only
    )
    if folded:
        return samples | FoldedSink()
    which = "user" if user_stacks_only else "kernel" if kernel_stacks_only else ""
    header = (
        f"Sampling at {frequency} Hertz of "
        f"{f'PID {pid}' if pid else 'all threads'} by "
        f"{which or 'user + kernel'} stack... Hit Ctrl-C to end."
    )
    return samples | ConsoleSink(line=stack_block, header=header)
