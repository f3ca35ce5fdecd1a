"""flowtrace, a log2 histogram of a field (``tslow``): ``log2_histogram("tslow")``,
one histogram at end of stream, computed in Python (``pushdown=False``), or
with ``--kernel`` in the BPF program, placed there by the planner (a
per-CPU array of slots; only the histogram leaves the kernel)."""

from __future__ import annotations

import sys
from typing import Any

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.ops import Result, hist_answer
from bench.workload import getppid_source
from flowtrace.operators import log2_histogram


def main(pid: int, kernel: bool = False) -> None:
    result = Result[Any]()
    pipeline = getppid_source(pid) | log2_histogram("tslow") | result
    stats = run(pipeline.replace(pushdown=kernel))
    answer = hist_answer(result.value)
    out = accounting(stats, sum(answer.values()))
    out["answer"] = answer
    report(out)


if __name__ == "__main__":
    main(int(sys.argv[1]), "--kernel" in sys.argv[2:])
