"""What each operator hands the kernel (``kernel_form()``): the exact form
with its bounds and the records it builds from what the kernel kept, or,
word for word, why it stays in user space (``flowtrace explain`` prints it)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from flowtrace.kernel_forms import (
    AggregateForm,
    Comparison,
    Every,
    FilterForm,
    JoinForm,
    Negation,
    RunningForm,
    Some,
    UserOnly,
)
from flowtrace.operators import (
    DEFAULT_MAX_KEYS,
    Collect,
    Count,
    EventTime,
    F,
    Max,
    Min,
    Rate,
    Sliding,
    Sum,
    Tumbling,
    count,
    filter,
    join,
    linear_histogram,
    log2_histogram,
    map,
    running_count,
    window,
)
from flowtrace.records import CountRow, CountTable, JoinPair, WindowResult


class Issue(msgspec.Struct, frozen=True):
    dev: int
    sector: int
    ts: int


class Done(msgspec.Struct, frozen=True):
    dev: int
    sector: int
    ts: int


@pytest.mark.parametrize(
    ("operator", "why"),
    [
        (map(str), "a Python function"),
        (
            filter(lambda e: e.fd == 1),
            "a Python function; a field predicate (F.pid == 42) can run in the kernel",
        ),
        (
            window(Collect()),
            "the aggregate collect has no in-kernel form (the kernel counts, sums,"
            " keeps min, max and histograms)",
        ),
        (window(Sum(lambda e: e.size)), "sum of a value a Python function computes"),
        (window(Max(lambda e: e.size)), "max of a value a Python function computes"),
        (log2_histogram(lambda e: e.size), "a histogram of a value a Python function computes"),
        (count(lambda e: e.fd), "counts by a key a Python function computes"),
        (
            window(Count(), every=Tumbling(1.0), clock=EventTime("ts")),
            "an event-time window (EventTime('ts')) closes by the events' own timestamps;"
            " the kernel keeps processing-time windows",
        ),
        (
            window(Count(), every=Sliding(2.0, 1.0)),
            "a sliding window; the kernel keeps tumbling windows",
        ),
        (window(Count(), by=lambda e: e.fd), "keyed by a Python function (by=)"),
        (
            join(lambda e: True, Done, key="dev", emit_incomplete=False),
            "its start or complete is a Python function; give event types",
        ),
        (
            join(Issue, lambda e: True, key="dev", emit_incomplete=False),
            "its start or complete is a Python function; give event types",
        ),
        (
            join(Issue, Done, key="dev", time_field=None, emit_incomplete=False),
            "it times by arrival (time_field=None)",
        ),
        (
            join(Issue, Done, key="dev"),
            "it emits incomplete starts (emit_incomplete=True);"
            " with emit_incomplete=False it runs in the kernel",
        ),
        (
            join(Issue, Done, key=lambda e: e.dev, complete_key="dev", emit_incomplete=False),
            "its key is a Python function",
        ),
        (
            join(Issue, Done, key="dev", complete_key=lambda e: e.dev, emit_incomplete=False),
            "its key is a Python function",
        ),
        (running_count(lambda e: e.dev), "its key is a Python function"),
    ],
)
def test_why_an_operator_stays_in_user_space_word_for_word(operator: Any, why: str) -> None:
    assert operator.kernel_form() == UserOnly(why)


def shape(form: Any) -> tuple[Any, ...]:
    assert isinstance(form, AggregateForm)
    return (
        form.aggregate,
        form.value,
        form.key,
        form.max_keys,
        form.divisor,
        form.max_index,
        form.every,
        form.limit,
    )


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        # a count by key keeps its own bound; every other aggregate the window's
        (count("comm", max_keys=7), ("count_by", None, ("comm",), 7, 1, 0, None, None)),
        (
            count(["dev", "comm"], every=Tumbling(2.0), limit=3),
            ("count_by", None, ("dev", "comm"), DEFAULT_MAX_KEYS, 1, 0, 2.0, 3),
        ),
        (window(Count()), ("count", None, (), DEFAULT_MAX_KEYS, 1, 0, None, None)),
        (
            window(Rate(), every=Tumbling(0.5)),
            ("rate", None, (), DEFAULT_MAX_KEYS, 1, 0, 0.5, None),
        ),
        (window(Sum("size"), by="dev", max_keys=9), ("sum", "size", ("dev",), 9, 1, 0, None, None)),
        (window(Min("size")), ("min", "size", (), DEFAULT_MAX_KEYS, 1, 0, None, None)),
        (
            log2_histogram("size", divisor=1024, by="comm", max_keys=5, every=Tumbling(1.0)),
            ("log2", "size", ("comm",), 5, 1024, 0, 1.0, None),
        ),
        (
            linear_histogram("size", max_index=50, divisor=2, every=Tumbling(3.0), limit=4),
            ("linear", "size", (), DEFAULT_MAX_KEYS, 2, 50, 3.0, 4),
        ),
    ],
)
def test_an_aggregate_in_the_kernel_keeps_its_bounds(
    operator: Any, expected: tuple[Any, ...]
) -> None:
    assert shape(operator.kernel_form()) == expected


def test_the_records_an_aggregate_form_builds_are_the_operator_s_own() -> None:
    keyed = window(Sum("size"), by="dev").kernel_form()
    assert isinstance(keyed, AggregateForm)
    assert keyed.records({3: 10, 4: 5}, 1.0, 2.0) == [
        WindowResult(aggregate="sum", value=10, key={"dev": 3}, field="size",
                     window_start=1.0, window_end=2.0),
        WindowResult(aggregate="sum", value=5, key={"dev": 4}, field="size",
                     window_start=1.0, window_end=2.0),
    ]  # fmt: skip
    whole = window(Count()).kernel_form()
    assert isinstance(whole, AggregateForm)
    assert whole.records(7, 0.0, 3.0) == [
        WindowResult(aggregate="count", value=7, window_start=0.0, window_end=3.0)
    ]
    table = count(["dev", "comm"]).kernel_form()
    assert isinstance(table, AggregateForm)
    assert table.records(Counter({(1, "a"): 2, (2, "b"): 5}), 0.0, 1.0) == [
        CountTable(
            rows=[CountRow({"dev": 2, "comm": "b"}, 5), CountRow({"dev": 1, "comm": "a"}, 2)],
            key_fields=["dev", "comm"],
            window_start=0.0,
            window_end=1.0,
        )
    ]


def test_a_field_predicate_is_a_filter_form() -> None:
    assert filter(F.fd == 1).kernel_form() == FilterForm(Comparison("fd", "==", 1))
    both = filter((F.fd >= 3) & ~(F.comm == "sh") | F.size.isin([1, 2]))
    assert both.kernel_form() == FilterForm(
        Some(
            (
                Every((Comparison("fd", ">=", 3), Negation(Comparison("comm", "==", "sh")))),
                Comparison("size", "in", frozenset({1, 2})),
            )
        )
    )


def test_a_join_of_types_by_fields_is_a_join_form() -> None:
    form = join(
        Issue,
        Done,
        key=("dev", "sector"),
        timeout=2.5,
        max_pending=11,
        on_repeat="keep",
        emit_incomplete=False,
    ).kernel_form()
    assert isinstance(form, JoinForm)
    assert (
        form.start,
        form.complete,
        form.start_key,
        form.complete_key,
        form.time_field,
        form.timeout,
        form.max_pending,
        form.keep_first,
    ) == (Issue, Done, ("dev", "sector"), ("dev", "sector"), "ts", 2.5, 11, True)
    begun, done = Issue(8, 100, 1_000), Done(8, 100, 4_000)
    assert form.pair((8, 100), begun, done, 3_000) == JoinPair(
        key={"dev": 8, "sector": 100}, start=begun, complete=done, latency_ns=3_000
    )
    replacing = join(Issue, Done, key="dev", emit_incomplete=False).kernel_form()
    assert isinstance(replacing, JoinForm)
    assert (replacing.keep_first, replacing.timeout, replacing.max_pending) == (
        False,
        10.0,
        DEFAULT_MAX_KEYS,
    )


def test_a_running_count_by_fields_is_a_running_form() -> None:
    form = running_count("dev", time="ts", max_keys=6).kernel_form()
    assert isinstance(form, RunningForm)
    assert (form.key, form.time, form.max_keys) == (("dev",), "ts", 6)
    whole = running_count().kernel_form()
    assert isinstance(whole, RunningForm)
    assert (whole.key, whole.time, whole.max_keys) == ((), "ts", DEFAULT_MAX_KEYS)


@pytest.mark.parametrize(
    ("operator", "fields"),
    [
        (filter((F.fd == 1) | (F.comm == "sh") & (F.fd > 0)), ("fd", "comm")),
        (window(Max("ts"), by="ts", every=Tumbling(1.0), clock=EventTime("ts")), ("ts",)),
        (window(Min(lambda e: e.size), by="dev"), ("dev",)),
        (running_count("dev", time="ts"), ("dev", "ts")),
        (running_count(time="stamp"), ("stamp",)),
    ],
)
def test_the_fields_an_operator_reads_each_once(operator: Any, fields: tuple[str, ...]) -> None:
    """What the planner checks against the record the kernel fills (more in
    test_operators_api's declarations)."""
    assert operator.reads_fields() == fields
