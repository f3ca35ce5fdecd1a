"""The tutorial's style with ``BPF_RINGBUF_OUTPUT``, in plain bcc.

A ring buffer of 8 pages (the perf loop's default per CPU),
``ringbuf_reserve`` + ``ringbuf_submit`` in the program,
``open_ring_buffer`` + ``ring_buffer_poll()`` in a loop, and a Python
callback per event that decodes it with ``b["events"].event(data)`` and
counts it by comm. A ring buffer reports no loss by itself: the program
counts failed reserves in a per-CPU array. On stop the tracepoint is
detached and the buffer drained.

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

PAGES = 8

PROGRAM = """\
#include <linux/sched.h>

{record}
BPF_RINGBUF_OUTPUT(events, {pages});
BPF_PERCPU_ARRAY(lost, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {{
    struct data_t data = {{}};
{fill}
    struct data_t *slot = events.ringbuf_reserve(sizeof(data));
    if (!slot) {{
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            (*n)++;
        return 0;
    }}
    __builtin_memcpy(slot, &data, sizeof(data));
    events.ringbuf_submit(slot, 0);
    return 0;
}}
"""


def main(pid: int, show: bool = False) -> None:
    stop = stop_on_sigint()
    b = BPF(text=PROGRAM.format(record=BCC_RECORD, fill=bcc_filter(pid), pages=PAGES))
    counts: Counter[bytes] = Counter()

    def count_event(ctx: int, data: int, size: int) -> int:
        event = b["events"].event(data)
        counts[event.comm] += 1
        if show:
            print(event.ts, flush=True)
        return 0

    b["events"].open_ring_buffer(count_event)
    ready()
    while not stop.set:
        b.ring_buffer_poll(timeout=100)
    b.detach_tracepoint(b"syscalls:sys_enter_getppid")
    b.ring_buffer_consume()
    lost = int(b["lost"].sum(0).value)
    report(
        {"delivered": sum(counts.values()), "dropped": {"kernel": lost}, "answer": _text(counts)}
    )
    b.cleanup()


def _text(counts: Counter[bytes]) -> dict[str, int]:
    return {comm.decode(): n for comm, n in counts.items()}


if __name__ == "__main__":
    main(int(sys.argv[1]), "--print" in sys.argv[2:])
