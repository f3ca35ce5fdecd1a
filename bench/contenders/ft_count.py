"""flowtrace, events to userspace: tracepoint -> filter by pid -> count by comm.

The source keeps the generator's pid in the kernel (like every contender);
``filter(pid=...)`` keeps it again in Python (what a user writes until
field filters are pushed down into the kernel); ``count("comm")`` emits one
table at end of stream. Default buffer sizes.

With ``--perf`` the source uses flowtrace's perf-buffer transport (its
fallback for kernels without ring buffers) instead of the ring buffer.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.ops import Result, count_answer
from bench.workload import getppid_source
from flowtrace.operators import count, filter


def main(pid: int, transport: str = "auto") -> None:
    result = Result[Any]()
    stats = run(getppid_source(pid, transport=transport) | filter(pid=pid) | count("comm") | result)
    answer = count_answer(result.value)
    out = accounting(stats, sum(answer.values()))
    out["answer"] = answer
    report(out)


if __name__ == "__main__":
    main(int(sys.argv[1]), "perf" if "--perf" in sys.argv[2:] else "auto")
