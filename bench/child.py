"""The contender side of the harness protocol.

A contender is started as ``python -m bench.contenders.NAME PID [OPTIONS]``
with ``PID`` the load generator's pid, and:

1. compiles and attaches, then calls :func:`ready` (one JSON line on
   stdout); the harness measures start-up as the time from starting the
   process to that line;
2. consumes events until the harness sends SIGINT, the user's Ctrl-C
   (:func:`stop_on_sigint` or the contender's own handling);
3. detaches, drains what is already buffered, and calls :func:`report`
   with its accounting and its answer (one JSON line);
4. waits (:func:`report` does) until the harness closes its stdin, so the
   harness can read the process's CPU clock after the report, then exits.

Diagnostics go to stderr, which the harness keeps in a log file.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any, TypedDict

__all__ = ["Report", "StopFlag", "ready", "report", "stop_on_sigint"]


class Report(TypedDict, total=False):
    """What a contender reports when it has drained.

    ``delivered``: events that reached the contender's answer; ``dropped``:
    events counted as lost or dropped, by where (``kernel``, a stage
    name...); ``answer``: a count table or histogram buckets; ``notes``:
    anything the harness should show (a stand-in stage, a caveat);
    ``stages``: per-stage counters, for the JSON.
    """

    delivered: int
    dropped: dict[str, int]
    answer: dict[str, int]
    notes: list[str]
    stages: list[str]
    output: str


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def ready() -> None:
    """Tell the harness the probes are attached."""
    _emit({"ready": True})


def report(result: Report) -> None:
    """Hand the result to the harness and wait until it has measured us."""
    _emit({"result": result})
    sys.stdin.read()


class StopFlag:
    """Set by SIGINT (and SIGTERM); polled by blocking loops between polls.

    A flag rather than the tutorial's KeyboardInterrupt: a KeyboardInterrupt
    raised inside a ctypes callback is printed and swallowed by ctypes, and
    one raised between ``.event(data)`` and the count would lose an event
    that was delivered.
    """

    def __init__(self) -> None:
        self.set = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def stop_on_sigint() -> StopFlag:
    flag = StopFlag()
    signal.signal(signal.SIGINT, flag)
    signal.signal(signal.SIGTERM, flag)
    return flag
