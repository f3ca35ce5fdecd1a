"""Generated predicates and key sets, compiled to C and run in the kernel.

Hypothesis builds field predicates (comparisons with any integer, in range
of the field or not; strings with quotes, backslashes, comment marks,
newlines and multi-byte characters; ``isin``, ``startswith``, ``&``, ``|``,
``~``) and key sets. Each example runs, at once, several pipelines
``write(2) entries | filter(generated) | count(by=keys)`` placed in the
kernel, over one deterministic workload whose writes are known exactly,
and compares each count table with the predicate evaluated in Python over
those writes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from workloads import lcg_sizes, sized_writes

from flowtrace import Pipeline, syscall_entry
from flowtrace.operators import F, Predicate, count, filter
from flowtrace.testing import CollectSink

pytestmark = pytest.mark.kernel

WRITES = 40
MOST = 5000
PIPELINES = 4
INT_FIELDS = ("fd", "count", "syscall_nr")  # u64, u64, s32 in the tracepoint's record
KEY_FIELDS = ("fd", "count", "comm", "syscall_nr")


@dataclass(frozen=True)
class Write:
    """A write of the workload, as the pipeline's events carry it."""

    pid: int
    fd: int
    count: int
    comm: str
    syscall_nr: int = 1


def the_writes(pid: int, seed: int) -> list[Write]:
    sizes = lcg_sizes(seed, WRITES, MOST)
    printed = len(f"{sum(sizes)}\n")  # the total it prints on stdout at the end
    return [Write(pid, 3, n, "sized_writes") for n in sizes] + [
        Write(pid, 1, printed, "sized_writes")
    ]


SIZES = lcg_sizes(1, WRITES, MOST)
EDGES = [0, 1, 3, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**63, 2**64 - 1, 2**64, -(2**63)]
integers = st.one_of(
    st.sampled_from(EDGES),  # the fields' bounds, in range and just out of it
    st.sampled_from(SIZES),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.integers(min_value=0, max_value=MOST),
)
ALPHABET = 'sized_wrtx"\\*/\n%\'é{}'
strings = st.one_of(
    st.sampled_from(["sized_writes", "sized", "", "s", "sized_writes_", "python3"]),
    st.text(alphabet=ALPHABET, max_size=6),
)


def _int_leaf() -> st.SearchStrategy[Predicate]:
    field = st.sampled_from(INT_FIELDS)
    compare = st.builds(
        lambda f, op, v: getattr(F, f).__getattribute__(op)(v),
        field,
        st.sampled_from(["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"]),
        integers,
    )
    member = st.builds(
        lambda f, vs, within: getattr(F, f).isin(vs) if within else getattr(F, f).notin(vs),
        field,
        st.lists(integers, max_size=5),
        st.booleans(),
    )
    return st.one_of(compare, compare, member)


def _string_leaf() -> st.SearchStrategy[Predicate]:
    return st.one_of(
        st.builds(lambda s: F.comm == s, strings),
        st.builds(lambda s: F.comm != s, strings),
        st.builds(lambda s: F.comm.startswith(s), strings),
        st.builds(lambda ss: F.comm.isin(ss), st.lists(strings, max_size=4)),
    )


predicates: st.SearchStrategy[Predicate] = st.recursive(
    st.one_of(_int_leaf(), _int_leaf(), _string_leaf()),
    lambda inner: st.one_of(
        st.builds(lambda a, b: a & b, inner, inner),
        st.builds(lambda a, b: a | b, inner, inner),
        st.builds(lambda a: ~a, inner),
    ),
    max_leaves=6,
)
_SIZED = F.comm == "sized_writes"
key_sets = st.lists(st.sampled_from(KEY_FIELDS), min_size=1, max_size=3, unique=True)


async def _run(cases: list[tuple[Predicate, list[str]]], seed: int) -> tuple[int, list[Any]]:
    workload = sized_writes(seed, WRITES, MOST)
    pipelines = [
        Pipeline(
            syscall_entry("write"),
            [filter((F.pid == workload.pid) & predicate), count(keys)],
            CollectSink[Any](),
        )
        for predicate, keys in cases
    ]
    for p in pipelines:
        assert p.placement().in_kernel == 2, p.describe()
    async with anyio.create_task_group() as tg:
        runs = [await tg.start(p.run) for p in pipelines]
        await anyio.to_thread.run_sync(workload.go)
        for run in runs:
            run.stop()
    for run in runs:
        assert run.stats.lost == 0 and run.stats.dropped == 0, run.stats.summary()
    return workload.pid, [run.sink.items for run in runs]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases=st.lists(st.tuples(predicates, key_sets), min_size=PIPELINES, max_size=PIPELINES))
@example(  # a chain of && per byte here made the verifier give up (E2BIG) before
    cases=[(((_SIZED & _SIZED) | ~_SIZED) & (F.fd == 0), ["fd"])] * PIPELINES
)
def test_generated_predicates_and_keys_count_in_the_kernel_as_in_python(
    cases: list[tuple[Predicate, list[str]]],
) -> None:
    pid, results = anyio.run(_run, cases, 1)
    writes = the_writes(pid, 1)
    for (predicate, keys), items in zip(cases, results, strict=True):
        (table,) = items
        kept = [w for w in writes if predicate(w)]
        expected = Counter(tuple(getattr(w, k) for k in keys) for w in kept)
        got = {tuple(r.key[k] for k in keys): r.count for r in table.rows}
        assert got == dict(expected), (predicate, keys)
        # ties in order of first appearance, as in Python
        firsts = list(dict.fromkeys(tuple(getattr(w, k) for k in keys) for w in kept))
        ranked = sorted(firsts, key=lambda k: -expected[k])
        assert [tuple(r.key[k] for k in keys) for r in table.rows] == ranked
