"""Log2 and linear histograms: bucket indexes against a transliteration of
bcc's bpf_log2l(), and the console rendering against bcc's own
print_log2_hist/print_linear_hist output for the same counts."""

from __future__ import annotations

import contextlib
import io
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from bcc import table as bcc_table  # bcc is required: without it these tests fail, not skip
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.clock import ManualClock
from flowtrace.errors import PipelineDefinitionError, StageError
from flowtrace.operators import (
    Linear,
    Log2,
    Sliding,
    linear_histogram,
    log2_bounds,
    log2_histogram,
)
from flowtrace.operators import log2_index as our_log2_index
from flowtrace.records import Bucket, Histogram, Record
from flowtrace.render import histogram_counts, histogram_lines, linear_lines, log2_lines
from flowtrace.testing import CollectSink, ListSource, OperatorHarness

U64 = (1 << 64) - 1


class Sized(msgspec.Struct, frozen=True):
    bytes: int


def ref_bpf_log2(v: int) -> int:
    """bcc's bpf_log2(unsigned int), statement by statement."""
    v &= 0xFFFFFFFF
    r = int(v > 0xFFFF) << 4
    v >>= r
    shift = int(v > 0xFF) << 3
    v >>= shift
    r |= shift
    shift = int(v > 0xF) << 2
    v >>= shift
    r |= shift
    shift = int(v > 0x3) << 1
    v >>= shift
    r |= shift
    r |= v >> 1
    return r


def ref_bpf_log2l(v: int) -> int:
    """bcc's bpf_log2l(unsigned long)."""
    v &= U64
    hi = v >> 32
    return ref_bpf_log2(hi) + 32 + 1 if hi else ref_bpf_log2(v) + 1


def bcc_prints(fn: object, *args: object) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args)  # type: ignore[operator]
    return out.getvalue()


def ours(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


u64s = st.one_of(
    st.integers(0, 70),
    st.integers(0, U64),
    st.integers(0, 64).map(lambda b: (1 << b) - 1),
    st.integers(0, 63).map(lambda b: 1 << b),
)


@given(st.one_of(u64s, st.integers(-(1 << 70), 1 << 70)))
def test_log2_index_is_bpf_log2l(value: int) -> None:
    assert our_log2_index(value) == ref_bpf_log2l(value)


def test_log2_index_of_edges() -> None:
    assert [ref_bpf_log2l(v) for v in (0, 1, 2, 3, 4, 1023, 1024, U64)] == [
        1,
        1,
        2,
        2,
        3,
        10,
        11,
        64,
    ]
    assert [our_log2_index(v) for v in (0, 1, 2, 3, 4, 1023, 1024, U64)] == [
        1,
        1,
        2,
        2,
        3,
        10,
        11,
        64,
    ]
    assert log2_bounds(1) == (0, 1)
    assert log2_bounds(11) == (1024, 2047)
    assert log2_bounds(64) == (1 << 63, U64)


@settings(max_examples=200, deadline=None)
@given(st.lists(u64s, max_size=300), st.integers(1, 50))
def test_log2_histogram_counts_equal_reference(values: list[int], batch: int) -> None:
    h = OperatorHarness(log2_histogram("bytes", unit="kbytes"))
    events = [Sized(v) for v in values]
    for i in range(0, len(events), batch):
        h.feed(events[i : i + batch])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    expected = Counter(ref_bpf_log2l(v) for v in values)
    got = {b.high.bit_length(): b.count for b in hist.buckets if b.count}
    assert got == dict(expected)
    assert hist.total == len(values)
    # buckets are contiguous from the lowest to the highest non-empty slot
    for b in hist.buckets:
        assert (b.low, b.high) == log2_bounds(b.high.bit_length())
    if values:
        slots = [b.high.bit_length() for b in hist.buckets]
        assert slots == list(range(min(expected), max(expected) + 1))
    else:
        assert hist.buckets == []


slot_counts = st.lists(st.integers(0, 10_000), min_size=65, max_size=65)


@settings(max_examples=300, deadline=None)
@given(
    slot_counts, st.booleans(), st.sampled_from(["usecs", "kbytes", "value", "a-long-unit-name-x"])
)
def test_log2_rendering_is_bccs(counts: list[int], strip: bool, unit: str) -> None:
    counts[0] = 0  # bpf_log2l never fills slot 0
    assert ours(log2_lines(counts, unit, strip)) == bcc_prints(
        bcc_table._print_log2_hist, counts, unit, strip
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=200),
    st.booleans(),
    st.sampled_from(["len", "slot", "a-long-unit-name"]),
)
def test_linear_rendering_is_bccs(counts: list[int], strip: bool, unit: str) -> None:
    padded = counts + [0] * (1025 - len(counts))
    assert ours(linear_lines(counts, unit, strip)) == bcc_prints(
        bcc_table._print_linear_hist, padded, unit, strip
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(u64s, max_size=200), st.booleans())
def test_histogram_record_renders_as_bcc_prints_the_same_values(
    values: list[int], strip: bool
) -> None:
    h = OperatorHarness(log2_histogram("bytes", unit="usecs"))
    h.feed([Sized(v) for v in values])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    table = [0] * 65
    for v in values:
        table[ref_bpf_log2l(v)] += 1
    assert ours(histogram_lines(hist, strip)) == bcc_prints(
        bcc_table._print_log2_hist, table, "usecs", strip
    )


def test_wide_layout_and_empty_histograms_match_bcc() -> None:
    table = [0] * 65
    table[40] = 7
    table[3] = 1
    assert ours(log2_lines(table, "ns")) == bcc_prints(
        bcc_table._print_log2_hist, table, "ns", None
    )
    assert log2_lines(table, "ns")[0].startswith("               ns ")
    assert log2_lines([0] * 65, "usecs") == []
    assert bcc_prints(bcc_table._print_log2_hist, [0] * 65, "usecs", None) == ""


def slots(**counts: int) -> list[int]:
    """65 log2 slots, ``s<N>=count`` set."""
    table = [0] * 65
    for name, count in counts.items():
        table[int(name[1:])] = count
    return table


# bcc switches to the wide layout (20-star bar) when a slot above 32 is used,
# and draws one star once width * count / most reaches 1: fixed examples at
# both edges, written out as bcc prints them.
BOUNDARIES = [
    (
        slots(s1=40, s32=1),
        [
            "     usecs               : count     distribution",
            "         0 -> 1          : 40       |****************************************|",
            "2147483648 -> 4294967295 : 1        |*                                       |",
        ],
    ),
    (
        slots(s1=41, s32=1),
        [
            "     usecs               : count     distribution",
            "         0 -> 1          : 41       |****************************************|",
            "2147483648 -> 4294967295 : 1        |                                        |",
        ],
    ),
    (
        slots(s1=20, s33=1),
        [
            "               usecs                         : count     distribution",
            "                   0 -> 1                    : 20       |********************|",
            "          4294967296 -> 8589934591           : 1        |*                   |",
        ],
    ),
    (
        slots(s1=21, s33=1),
        [
            "               usecs                         : count     distribution",
            "                   0 -> 1                    : 21       |********************|",
            "          4294967296 -> 8589934591           : 1        |                    |",
        ],
    ),
]


@pytest.mark.parametrize(("table", "expected"), BOUNDARIES)
def test_layout_switch_and_one_star_threshold_are_bccs(
    table: list[int], expected: list[str]
) -> None:
    lines = log2_lines(table, "usecs")
    assert [lines[0], lines[1], lines[-1]] == expected
    assert all(" : 0 " in line for line in lines[2:-1])  # the empty slots between
    assert ours(lines) == bcc_prints(bcc_table._print_log2_hist, table, "usecs", None)


def test_linear_one_star_threshold_is_bccs() -> None:
    assert linear_lines([40, 1], "len") == [
        "     len           : count     distribution",
        "        0          : 40       |****************************************|",
        "        1          : 1        |*                                       |",
    ]
    assert linear_lines([41, 1], "len")[-1] == (
        "        1          : 1        |                                        |"
    )


def test_divisor_negative_and_float_values_as_the_kernel_sees_them() -> None:
    class Latency(msgspec.Struct, frozen=True):
        ns: float

    h = OperatorHarness(log2_histogram("ns", unit="usecs", divisor=1000))
    h.feed([Latency(0.0), Latency(999.0), Latency(1000.0), Latency(4500.5)])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    # 0 and 0 -> slot 1, 1 -> slot 1, 4 -> slot 3
    assert [(b.low, b.high, b.count) for b in hist.buckets] == [(0, 1, 3), (2, 3, 0), (4, 7, 1)]
    h = OperatorHarness(log2_histogram("bytes"))
    h.feed([Sized(-1)])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    assert [(b.low, b.high, b.count) for b in hist.buckets] == [(1 << 63, U64, 1)]


def test_divisor_divides_the_u64_value_as_the_kernel_does() -> None:
    """``(u64)-1 / 1024`` is 2**54 - 1: slot 54, not the slot of -1 (64)."""
    h = OperatorHarness(log2_histogram("bytes", divisor=1024))
    h.feed([Sized(-1)])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    assert [(b.low, b.high, b.count) for b in hist.buckets] == [(1 << 53, (1 << 54) - 1, 1)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(u64s, st.integers(-(1 << 70), 1 << 70)), max_size=100),
    st.sampled_from([1, 2, 3, 1000, 1024, 1 << 40]),
    st.integers(1, 30),
)
def test_log2_histogram_with_divisor_equals_reference(
    values: list[int], divisor: int, batch: int
) -> None:
    h = OperatorHarness(log2_histogram("bytes", divisor=divisor))
    events = [Sized(v) for v in values]
    for i in range(0, len(events), batch):
        h.feed(events[i : i + batch])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    expected = Counter(ref_bpf_log2l((v & U64) // divisor) for v in values)
    assert {b.high.bit_length(): b.count for b in hist.buckets if b.count} == dict(expected)


def test_linear_histogram_slots_and_out_of_range_are_counted() -> None:
    h = OperatorHarness(linear_histogram("bytes", unit="len", max_index=10))
    values = [0, 3, 3, 10, 11, -1, 500]
    h.feed([Sized(v) for v in values])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    assert hist.scale == "linear"
    assert [(b.low, b.count) for b in hist.buckets] == [
        (0, 1), (1, 0), (2, 0), (3, 2), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 0), (10, 1)
    ]  # fmt: skip
    assert all(b.low == b.high for b in hist.buckets)
    assert h.stats.dropped == {"out_of_range": 3}
    counts = histogram_counts(hist)
    assert ours(histogram_lines(hist)) == bcc_prints(
        bcc_table._print_linear_hist, counts + [0] * (1025 - len(counts)), "len", None
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1024), max_size=300))
def test_linear_counts_equal_reference(values: list[int]) -> None:
    h = OperatorHarness(linear_histogram("bytes"))
    h.feed([Sized(v) for v in values])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    assert {b.low: b.count for b in hist.buckets if b.count} == dict(Counter(values))


def test_histogram_counts_reject_foreign_buckets() -> None:
    bad = Histogram(field="x", unit="u", scale="log2", buckets=[Bucket(3, 9, 1)])
    with pytest.raises(ValueError, match="not a log2 bucket"):
        histogram_counts(bad)
    with pytest.raises(ValueError, match="neither"):
        histogram_counts(Histogram(field="x", unit="u", scale="log10", buckets=[]))


def test_bad_parameters_fail_with_one_line() -> None:
    with pytest.raises(PipelineDefinitionError, match="divisor must be a positive integer"):
        Log2("bytes", divisor=0)
    with pytest.raises(PipelineDefinitionError, match="max_index"):
        Linear("bytes", max_index=-1)
    with pytest.raises(PipelineDefinitionError, match="'by tes' is not a field name"):
        log2_histogram("by tes")


@pytest.mark.anyio
async def test_missing_field_names_the_field_and_the_events_fields() -> None:
    events = [Sized(random.randrange(100)) for _ in range(10)]
    pipeline = ListSource(events) | log2_histogram("size") | CollectSink[Record]()
    with pytest.raises(StageError, match=r"event Sized has no field 'size'; its fields are bytes"):
        await pipeline.run()


class SizedBy(msgspec.Struct, frozen=True):
    bytes: int
    comm: str


@pytest.mark.parametrize("make", [log2_histogram, linear_histogram])
def test_keyed_histogram_keeps_at_most_max_keys_and_counts_the_rest(
    make: Callable[..., Any],
) -> None:
    h = OperatorHarness(make("bytes", by="comm", max_keys=2))
    h.feed([SizedBy(4, c) for c in "abcacd"])
    hists = [r for r in h.finish() if isinstance(r, Histogram)]
    assert [(r.key, r.total) for r in hists] == [({"comm": "a"}, 2), ({"comm": "b"}, 1)]
    assert h.stats.dropped == {"key_limit": 3}


class Latency(msgspec.Struct, frozen=True):
    ns: float


def test_float_values_without_a_divisor_are_truncated_as_a_c_conversion() -> None:
    values = [0.5, 3.7, 1000.0, -1.5]
    h = OperatorHarness(log2_histogram("ns"))
    h.feed([Latency(v) for v in values[:3]])  # only floats in range
    h.feed([Latency(values[3])])  # a negative one
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    # 0 -> slot 1, 3 -> slot 2, 1000 -> slot 10, (u64)-1 -> slot 64
    assert {(b.low, b.high): b.count for b in hist.buckets if b.count} == {
        (0, 1): 1, (2, 3): 1, (512, 1023): 1, (1 << 63, U64): 1
    }  # fmt: skip
    assert hist.sum == sum(values)  # the values as given
    h = OperatorHarness(linear_histogram("ns", max_index=5))
    h.feed([Latency(v) for v in [2.9, 0.1, 5.99, 6.0, 2.0]])
    [hist] = h.finish()
    assert isinstance(hist, Histogram)
    slots = [(b.low, b.count) for b in hist.buckets]
    assert slots == [(0, 1), (1, 0), (2, 2), (3, 0), (4, 0), (5, 1)]
    assert h.stats.dropped == {"out_of_range": 1}


@pytest.mark.parametrize(
    ("make", "alone", "added", "later"),
    [
        (linear_histogram, [(1, 1, 2), (2, 2, 0), (3, 3, 1)],
         [(1, 1, 2), (2, 2, 0), (3, 3, 2), (4, 4, 0), (5, 5, 1)],
         [(3, 3, 1), (4, 4, 0), (5, 5, 1)]),
        (log2_histogram, [(0, 1, 2), (2, 3, 1)], [(0, 1, 2), (2, 3, 2), (4, 7, 1)],
         [(2, 3, 1), (4, 7, 1)]),
    ],
)  # fmt: skip
def test_sliding_histograms_add_up_the_intervals_each_window_covers(
    make: Callable[..., Any],
    alone: list[tuple[int, int, int]],
    added: list[tuple[int, int, int]],
    later: list[tuple[int, int, int]],
) -> None:
    h = OperatorHarness(make("bytes", every=Sliding(2.0, 1.0)), ManualClock(0.0))
    h.feed([Sized(1), Sized(1), Sized(3)])
    emitted = h.advance(1.0)
    h.feed([Sized(3), Sized(5)])
    emitted += h.advance(1.0) + h.advance(1.0)
    assert [
        (r.window_start, r.window_end, r.sum, [(b.low, b.high, b.count) for b in r.buckets])
        for r in emitted
        if isinstance(r, Histogram)
    ] == [(0.0, 1.0, 5.0, alone), (0.0, 2.0, 13.0, added), (1.0, 3.0, 8.0, later)]


def test_log2_bounds_of_every_slot_and_none_outside() -> None:
    assert [log2_bounds(s) for s in (1, 2, 3, 64)] == [(0, 1), (2, 3), (4, 7), (1 << 63, U64)]
    for slot in (0, 65):
        with pytest.raises(ValueError, match=rf"^log2 slot {slot} out of range 1\.\.64$"):
            log2_bounds(slot)


def test_a_histogram_record_names_its_value_unit_scale_and_window() -> None:
    clock = ManualClock(5.0)
    h = OperatorHarness(log2_histogram("bytes", unit="kbytes", divisor=1024), clock)
    h.feed([Sized(1024), Sized(3000)])  # 1 and 2 after the divisor
    clock.advance(2.0)
    assert h.finish() == [
        Histogram(field="bytes", unit="kbytes", scale="log2",
                  buckets=[Bucket(0, 1, 1), Bucket(2, 3, 1)], sum=(1024 + 3000) / 1024,
                  window_start=5.0, window_end=7.0)
    ]  # fmt: skip

    def size(e: Sized) -> int:
        return e.bytes

    for value, name in [(size, "size"), (lambda e: e.bytes, "value")]:
        h = OperatorHarness(linear_histogram(value, max_index=3), ManualClock(0.0))
        h.feed([Sized(1), Sized(3)])
        assert h.finish() == [
            Histogram(field=name, unit="value", scale="linear",
                      buckets=[Bucket(1, 1, 1), Bucket(2, 2, 0), Bucket(3, 3, 1)], sum=4.0,
                      window_start=0.0, window_end=0.0)
        ]  # fmt: skip


def test_histograms_by_key_one_per_key_in_order_of_first_appearance() -> None:
    for make in (log2_histogram, linear_histogram):
        h = OperatorHarness(make("bytes", by="comm"))
        h.feed([SizedBy(1, "b"), SizedBy(3, "a"), SizedBy(1, "b")])
        results = [(r.key, r.total) for r in h.finish() if isinstance(r, Histogram)]
        assert results == [({"comm": "b"}, 2), ({"comm": "a"}, 1)], make
