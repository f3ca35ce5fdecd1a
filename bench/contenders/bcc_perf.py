"""The tutorial's style (lesson 7, hello_perf_output), in plain bcc.

``BPF_PERF_OUTPUT`` + ``open_perf_buffer`` with the default 8 pages per CPU,
``perf_buffer_poll()`` in a loop, and a Python callback per event that
decodes it with ``b["events"].event(data)`` and counts it by comm. Records
the kernel could not write are counted by the lost callback. On stop the
tracepoint is detached and the buffer drained, so every event is either
counted or reported lost.

With ``--print`` the callback also prints each event's timestamp, as the
tutorial's loops print each event, flushed as a terminal would show it (the
latency benchmark reads the lines from the pipe).
"""

from __future__ import annotations

import sys
from collections import Counter

from bcc import BPF

from bench.child import ready, report, stop_on_sigint
from bench.workload import BCC_RECORD, bcc_filter

PROGRAM = """\
#include <linux/sched.h>

{record}
BPF_PERF_OUTPUT(events);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {{
    struct data_t data = {{}};
{fill}
    events.perf_submit(args, &data, sizeof(data));
    return 0;
}}
"""


def main(pid: int, show: bool = False) -> None:
    stop = stop_on_sigint()
    b = BPF(text=PROGRAM.format(record=BCC_RECORD, fill=bcc_filter(pid)))
    counts: Counter[bytes] = Counter()
    lost = 0

    def count_event(cpu: int, data: int, size: int) -> None:
        event = b["events"].event(data)
        counts[event.comm] += 1
        if show:
            print(event.ts, flush=True)

    def count_lost(n: int) -> None:
        nonlocal lost
        lost += n

    b["events"].open_perf_buffer(count_event, lost_cb=count_lost)
    ready()
    while not stop.set:
        b.perf_buffer_poll(timeout=100)
    b.detach_tracepoint(b"syscalls:sys_enter_getppid")
    seen = -1
    while seen != sum(counts.values()) + lost:  # until a poll brings nothing more
        seen = sum(counts.values()) + lost
        b.perf_buffer_poll(timeout=0)
    report(
        {"delivered": sum(counts.values()), "dropped": {"kernel": lost}, "answer": _text(counts)}
    )
    b.cleanup()


def _text(counts: Counter[bytes]) -> dict[str, int]:
    return {comm.decode(): n for comm, n in counts.items()}


if __name__ == "__main__":
    main(int(sys.argv[1]), "--print" in sys.argv[2:])
