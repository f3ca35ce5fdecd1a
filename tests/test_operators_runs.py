"""One configured operator, many runs: every operator keeps its per-run
state in ``open()``, so runs on shallow copies of one object (as a
pipeline's runs are) give identical results and leave the original as it
was configured."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

import flowtrace.operators as ops
from flowtrace.clock import ManualClock
from flowtrace.stages import Operator
from flowtrace.testing import OperatorHarness


class Ev(msgspec.Struct, frozen=True):
    n: int
    k: int
    ts: int
    comm: str
    size: int


class Start(Ev, frozen=True):
    pass


class Done(Ev, frozen=True):
    pass


class LastSizes(ops.EventOperator[Ev, tuple[str, int]]):
    """Emits each command's latest size on every tick; holds one size per
    command; side records go on ahead; end of stream emits the same; errors
    fail the stage."""

    tick_interval = 1.0

    def setup(self) -> None:
        self.latest: dict[str, int] = {}

    def on_event(self, event: Ev) -> None:
        self.latest[event.comm] = event.size

    def on_tick(self) -> None:
        for comm, size in sorted(self.latest.items()):
            self.emit((comm, size))

    def on_end(self) -> None:
        self.on_tick()


@ops.per_event
def big(e: Ev, over: int) -> int | None:
    return e.size if e.size > over else None


SECOND = 1_000_000_000
TUMBLING = ops.Tumbling(1.0)
SLIDING = ops.Sliding(2.0, 0.5)
EVENT_TIME = ops.EventTime("ts", lateness=0.5)

FACTORIES: dict[str, Callable[[], Operator[Any, Any]]] = {
    "filter predicate": lambda: ops.filter((ops.F.k == 1) | (ops.F.size > 30)),
    "filter function": lambda: ops.filter(lambda e: e.n % 2 == 0),
    "map": lambda: ops.map(lambda e: e.size),
    "flat_map": lambda: ops.flat_map(lambda e: [e.n] * e.k),
    "sample": lambda: ops.sample(3),
    "distinct": lambda: ops.distinct("comm", max_keys=2, forget_after=1.5),
    "throttle": lambda: ops.throttle(4, per=0.5),
    "join types": lambda: ops.join(Start, Done, key="k", timeout=1.0, max_pending=2),
    "join predicates": lambda: ops.join(
        lambda e: e.n % 2 == 0, lambda e: e.n % 2 == 1, key="k", on_repeat="keep"
    ),
    "window tumbling": lambda: ops.window(ops.Count(), every=TUMBLING),
    "window sliding by key": lambda: ops.window(ops.Sum("size"), every=SLIDING, by="comm"),
    "window whole stream": lambda: ops.window(ops.Max("size"), by="comm", max_keys=2),
    "window collect limit": lambda: ops.window(ops.Collect(3), every=TUMBLING, limit=3),
    "window event time": lambda: ops.window(ops.Min("size"), every=SLIDING, clock=EVENT_TIME),
    "count": lambda: ops.count("comm", top=2, every=TUMBLING, max_keys=2),
    "count event time": lambda: ops.count(["comm", "k"], every=TUMBLING, clock=EVENT_TIME),
    "log2_histogram": lambda: ops.log2_histogram("size", divisor=2, by="k", every=SLIDING),
    "linear_histogram": lambda: ops.linear_histogram("size", max_index=40, every=TUMBLING),
    "rate": lambda: ops.rate(by="comm"),
    "rate sliding event time": lambda: ops.rate(every=SLIDING, clock=EVENT_TIME, limit=4),
    "EventOperator": LastSizes,
    "per_event": lambda: big(20),
}


def batches() -> list[list[Any]]:
    """Twelve batches, 0.4 s apart: events whose timestamps step back now
    and then (late in event time), and join starts and completes."""
    out: list[list[Any]] = []
    for step in range(12):
        batch: list[Any] = []
        for i in range(step * 5, step * 5 + 5):
            back = 3 if i % 7 == 0 else 0
            ts = (step - back) * 4 * SECOND // 10 + i
            batch.append(Ev(n=i, k=i % 3, ts=ts, comm="abcd"[i % 4], size=(i * 7) % 50))
        ts = step * SECOND
        batch += [Start(step, step % 4, ts, "e", step), Done(step, (step + 1) % 4, ts, "e", step)]
        out.append(batch)
    return out


Outcome = tuple[list[Any], int, int, dict[str, int], list[str]]


def run_together(*copies: Operator[Any, Any]) -> list[Outcome]:
    """Runs of ``copies`` at the same time, batch by batch in turn, each as
    a pipeline drives it: batches, ticks, end of stream."""
    runs = [OperatorHarness(op, ManualClock(100.0)) for op in copies]
    for batch in batches():
        for h in runs:
            h.feed(batch)
            h.advance(0.4)
    for h in runs:
        h.finish()
    return [
        (h.emitted, h.stats.received, h.stats.emitted, dict(h.stats.dropped), h.reports)
        for h in runs
    ]


def configuration(value: Any, depth: int = 3) -> Any:
    """``value`` as it is now: containers by their contents, objects by their
    attributes (an operator's aggregate, key getter, ...), ``depth`` deep."""
    if isinstance(value, dict | list | set):
        return type(value), [configuration(v, depth - 1) for v in [*value]], repr(value)
    if depth and hasattr(value, "__dict__") and not callable(value):
        return value, {k: configuration(v, depth - 1) for k, v in vars(value).items()}
    return value


@pytest.mark.parametrize("name", FACTORIES)
def test_runs_on_copies_are_identical_and_leave_the_original_alone(name: str) -> None:
    """Two runs on copies of one configured operator, one after the other and
    then both at once, give the same results; the original is untouched."""
    configured = FACTORIES[name]()
    before = configuration(configured)
    [first] = run_together(copy.copy(configured))
    [second] = run_together(copy.copy(configured))
    assert first == second
    assert run_together(copy.copy(configured), copy.copy(configured)) == [first, first]
    assert first[0], "the run emitted nothing: the comparison would prove little"
    assert configuration(configured) == before


def test_the_runs_exercise_what_they_should() -> None:
    """The shared script reaches limits, late events, key limits and expiry,
    so the comparison covers that state too."""
    dropped = {name: run_together(make())[0][3] for name, make in FACTORIES.items()}
    assert dropped["window collect limit"]["after_limit"] > 0
    assert dropped["window event time"]["late"] > 0
    assert dropped["count"]["key_limit"] > 0
    assert dropped["join types"]["expired"] > 0
    assert dropped["throttle"]["throttled"] > 0
