"""flowtrace, a log2 histogram of a field (``tslow``) computed in Python:
``log2_histogram("tslow")``, one histogram at end of stream."""

from __future__ import annotations

import sys
from typing import Any

from bench.child import report
from bench.contenders._flowtrace import accounting, run
from bench.ops import Result, hist_answer
from bench.workload import getppid_source
from flowtrace.operators import log2_histogram


def main(pid: int) -> None:
    result = Result[Any]()
    stats = run(getppid_source(pid) | log2_histogram("tslow") | result)
    answer = hist_answer(result.value)
    out = accounting(stats, sum(answer.values()))
    out["answer"] = answer
    report(out)


if __name__ == "__main__":
    main(int(sys.argv[1]))
