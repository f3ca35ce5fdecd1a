"""Every bad definition of an operator fails at once with exactly one line
naming the problem (and, where there is one, the fix)."""

# The definitions are wrong on purpose, their types too (a caller without mypy):
# mypy: disable-error-code="arg-type,call-overload,operator"

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from flowtrace.errors import PipelineDefinitionError
from flowtrace.operators import (
    Collect,
    Compare,
    Count,
    CountBy,
    EventTime,
    F,
    Linear,
    Log2,
    Sliding,
    Sum,
    Tumbling,
    count,
    distinct,
    field,
    filter,
    flat_map,
    join,
    log2_histogram,
    map,
    merge_by,
    per_event,
    running_count,
    sample,
    stream_operator,
    throttle,
    window,
)


class Ev(msgspec.Struct):
    seq: int


@pytest.mark.parametrize(
    ("define", "line"),
    [
        (lambda: Sum("a b"), "Sum: 'a b' is not a field name; pass a field name or a function"),
        (lambda: Sum(3), "Sum: expected a field name or a function, got int"),
        (
            lambda: Collect(max_items=0),
            "Collect(max_items=0): max_items must be a positive integer, got 0",
        ),
        (lambda: Log2("x", divisor=0), "Log2: divisor must be a positive integer, got 0"),
        (
            lambda: Linear("x", max_index=-1),
            "Linear: max_index must be a non-negative integer, got -1",
        ),
        (lambda: count("comm", top=0), "count: top must be a positive integer, got 0"),
        (lambda: count("comm", max_keys=0), "count: max_keys must be a positive integer, got 0"),
        (
            lambda: count([]),
            "count: a key is a field name, a list of field names, or a function; got []",
        ),
        (lambda: count(["pid", "pid"]), "count: key fields ('pid', 'pid') repeat a field"),
        (
            lambda: distinct([]),
            "distinct: a key is a field name, a list of field names, or a function; got []",
        ),
        (
            lambda: count(3),
            "count: a key is a field name, a list of field names, or a function; got 3",
        ),
        (lambda: sample(0), "sample: n must be a positive integer, got 0"),
        (lambda: distinct("k", max_keys=0), "distinct: max_keys must be a positive integer, got 0"),
        (
            lambda: distinct("k", forget_after=0),
            "distinct: forget_after must be a positive number, got 0",
        ),
        (
            lambda: distinct("k", forget_after=float("nan")),
            "distinct: forget_after must be a positive number, got nan",
        ),
        (lambda: throttle(0), "throttle: limit must be a positive integer, got 0"),
        (lambda: throttle(1, per=None), "throttle: per is required"),
        (lambda: throttle(1, per=True), "throttle: per must be a positive number, got True"),
        (
            lambda: join(int, str, key="k", timeout=-1),
            "join: timeout must be a positive number, got -1",
        ),
        (
            lambda: join(int, str, key="k", max_pending=0),
            "join: max_pending must be a positive number, got 0",
        ),
        (
            lambda: join(3, str, key="k"),
            "join: start must be an event type or a predicate function",
        ),
        (
            lambda: join(int, 3, key="k"),
            "join: complete must be an event type or a predicate function",
        ),
        (
            lambda: join(int, str, key="k", on_repeat="first"),
            "join: on_repeat='first'; use 'replace' or 'keep'",
        ),
        (
            lambda: join(int, str, key="k", time_field="1x"),
            "join: '1x' is not a field name; pass a field name or a function",
        ),
        (
            lambda: join(int, str, key="k", complete_key=["a", "a"]),
            "join: key fields ('a', 'a') repeat a field",
        ),
        (lambda: merge_by(window=None), "merge_by: window is required"),
        (lambda: merge_by(window=0), "merge_by: window must be a positive number, got 0"),
        (lambda: merge_by(top=0), "merge_by: top must be a positive integer, got 0"),
        (lambda: merge_by(worst=0), "merge_by: worst must be a positive integer, got 0"),
        (lambda: merge_by(max_groups=0), "merge_by: max_groups must be a positive integer, got 0"),
        (lambda: merge_by(lateness=-1), "merge_by: lateness must be >= 0 and finite, got -1"),
        (
            lambda: merge_by(max_wait=float("inf")),
            "merge_by: max_wait must be >= 0 and finite, got inf",
        ),
        (lambda: merge_by(lateness=True), "merge_by: lateness must be >= 0 and finite, got True"),
        (lambda: merge_by(keep=("cpu",)), "merge_by: keep=('cpu',): only 'host' can be kept"),
        (lambda: merge_by(name="fleet", top=0), "fleet: top must be a positive integer, got 0"),
        (
            lambda: running_count("k", max_keys=0),
            "running_count: max_keys must be a positive integer, got 0",
        ),
        (lambda: running_count(time="1x"), "running_count: time must be a field name, got '1x'"),
        (
            lambda: running_count([]),
            "running_count: a key is a field name, a list of field names, or a function; got []",
        ),
        (lambda: Tumbling(0), "Tumbling: length must be a positive number, got 0"),
        (lambda: Sliding(0, 1), "Sliding: length must be a positive number, got 0"),
        (lambda: Sliding(2, 0), "Sliding: step must be a positive number, got 0"),
        (
            lambda: Sliding(3, 2),
            "Sliding(3, 2): length 3 s is not a whole multiple of the step 2 s; choose a length"
            " that is",
        ),
        (
            lambda: Sliding(1, 2),
            "Sliding(1, 2): length 1 s is not a whole multiple of the step 2 s; choose a length"
            " that is",
        ),
        (
            lambda: EventTime("1x"),
            "EventTime: '1x' is not a field name; pass a field name or a function",
        ),
        (
            lambda: EventTime("ts", lateness=-1),
            "EventTime: lateness must be >= 0 and finite, got -1",
        ),
        (
            lambda: EventTime("ts", lateness=True),
            "EventTime: lateness must be >= 0 and finite, got True",
        ),
        (
            lambda: window(Count(), every=3),
            "window(count): every=3 is not a windower; pass every=Tumbling(3) or"
            " every=Sliding(length, step)",
        ),
        (
            lambda: window(Count(), every="1s"),
            "window(count): every='1s' is not a windower; pass every=Tumbling(seconds) or"
            " every=Sliding(length, step)",
        ),
        (
            lambda: window(Count(), clock=3),
            "window(count): clock=3 is not a clock; pass clock=ProcessingTime() or"
            " clock=EventTime('<timestamp field>')",
        ),
        (
            lambda: window(Count(), limit=2),
            "window(count): event time and limit need windows; pass every=Tumbling(seconds)",
        ),
        (
            lambda: window(Count(), clock=EventTime("ts")),
            "window(count): event time and limit need windows; pass every=Tumbling(seconds)",
        ),
        (
            lambda: window(Count(), every=Tumbling(1), limit=0),
            "window(count): limit must be a positive integer, got 0",
        ),
        (
            lambda: window(Count(), max_keys=0),
            "window(count): max_keys must be a positive integer, got 0",
        ),
        (
            lambda: window(CountBy("k"), by="x"),
            "window(count): count is keyed already; drop by= or use another aggregate",
        ),
        (
            lambda: window(Count(), by=[]),
            "window(count): a key is a field name, a list of field names, or a function; got []",
        ),
        (
            lambda: log2_histogram("x", every=Tumbling(1), limit=0),
            "log2_histogram: limit must be a positive integer, got 0",
        ),
        (
            lambda: count("k", every=5),
            "count: every=5 is not a windower; pass every=Tumbling(5) or every=Sliding(length,"
            " step)",
        ),
        (lambda: filter(42), "filter expects a function or a field predicate, got int"),
        (
            lambda: filter(F.pid == 1, comm="sh"),
            "filter takes a predicate or field=value arguments, not both: combine them with &"
            " (F.pid == 1) & (F.comm == 'sh')",
        ),
        (lambda: filter(), "filter needs a predicate or field=value arguments"),
        (
            lambda: (F.pid == 1) & (lambda e: True),
            "cannot combine a field predicate with function: combine predicates such as F.pid =="
            " 1, or write one function",
        ),
        (
            lambda: Compare("pid", "~", 1),
            "unknown comparison '~': use one of ==, !=, <, <=, >, >=, in, not in, startswith",
        ),
        (lambda: field("a b"), "'a b' is not a field name"),
        (lambda: F.comm.startswith(3), "F.comm.startswith takes a string, got int"),
        (lambda: map(3), "map expects a function, got int"),
        (lambda: flat_map(3), "flat_map expects a function, got int"),
        (
            lambda: per_event(3),
            "per_event: 3 must be a plain function of an event; use stream_operator for async"
            " generators",
        ),
        (
            lambda: stream_operator(len),
            "stream_operator: 'len' is not an async generator function; write it as 'async def'"
            " with 'async for' and 'yield'",
        ),
        (
            lambda: running_count(time="seq").output_type(Ev),
            "running_count: Ev already has a field 'seq', which running_count adds; map the"
            " event to one without it first",
        ),
        (
            lambda: running_count().output_type(int),
            "running_count: int is not an event type (a msgspec Struct); it passes events on"
            " with fields added",
        ),
    ],
)
def test_a_bad_definition_fails_with_its_one_line(define: Callable[[], Any], line: str) -> None:
    with pytest.raises(PipelineDefinitionError) as raised:
        define()
    assert str(raised.value) == line
