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

from flowtrace import Pipeline
from flowtrace.arguments import Arguments, positive_int
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.stack_lines import stack_block
from flowtrace.sinks.stacks import FoldedSink
from flowtrace.sources.profile import cpu_samples

USAGE = "[-F HZ] [-p PID] [-U | -K] [-f]"


def pipeline(args: list[str]) -> Pipeline:
    options = Arguments("pipelines/tools/profile.py", USAGE)
    options.add_argument("-F", "--frequency", type=positive_int, default=49)
    options.add_argument("-p", "--pid", type=positive_int)
    only = options.add_mutually_exclusive_group()
    only.add_argument("-U", "--user-stacks-only", action="store_true")
    only.add_argument("-K", "--kernel-stacks-only", action="store_true")
    options.add_argument("-f", "--folded", action="store_true")
    given = options.parse(args)
    samples = cpu_samples(
        given.frequency,
        pid=given.pid,
        user=not given.kernel_stacks_only,
        kernel=not given.user_stacks_only,
    )
    if given.folded:
        return samples | FoldedSink()
    which = "user" if given.user_stacks_only else "kernel" if given.kernel_stacks_only else ""
    header = (
        f"Sampling at {given.frequency} Hertz of "
        f"{f'PID {given.pid}' if given.pid else 'all threads'} by "
        f"{which or 'user + kernel'} stack... Hit Ctrl-C to end."
    )
    return samples | ConsoleSink(line=stack_block, header=header)
