"""flowtrace: tracepoint -> filter by pid -> count by comm.

The source keeps the generator's pid in the kernel (like every contender);
``filter(pid=...)`` keeps it again; ``count("comm")`` emits one table at
end of stream. Default buffer sizes.

By default the pipeline runs with ``pushdown=False``: every event crosses
the ring buffer and the filter and count run in Python (the user-space
path). With ``--kernel`` the planner places both in the BPF program, as it
does for any pipeline: counts are kept in a per-CPU BPF hash and only the
table leaves the kernel. With ``--perf`` the source uses flowtrace's
perf-buffer transport (its fallback for kernels without ring buffers).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.ops import Result, count_answer
from bench.workload import getppid_source
from flowtrace.operators import count, filter


def main(pid: int, transport: str = "auto", kernel: bool = False) -> None:
    result = Result[Any]()
    pipeline = getppid_source(pid, transport=transport) | filter(pid=pid) | count("comm") | result
    stats = run(pipeline.replace(pushdown=kernel))
    answer = count_answer(result.value)
    out = accounting(stats, sum(answer.values()))
    out["answer"] = answer
    report(out)


if __name__ == "__main__":
    options = sys.argv[2:]
    main(int(sys.argv[1]), "perf" if "--perf" in options else "auto", "--kernel" in options)
