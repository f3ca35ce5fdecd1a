"""running_count on synthetic events: the running number and gap per key,
its bound, the type it emits, and where the planner places it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.errors import PipelineDefinitionError
from flowtrace.events import Event, layout_of
from flowtrace.kernel_view import record_view
from flowtrace.ktypes import comm, s64, u32, u64
from flowtrace.operators import F, Predicate, filter, running_count
from flowtrace.placement import place_operators
from flowtrace.testing import OperatorHarness


class Ev(Event, frozen=True):
    ts: u64
    pid: u32
    comm: comm


def test_each_event_gets_its_number_and_the_gap_to_the_previous_of_its_key() -> None:
    h = OperatorHarness(running_count("pid"))
    out = h.feed([Ev(100, 1, "a"), Ev(130, 2, "b"), Ev(150, 1, "a")])
    out += h.feed([Ev(400, 1, "a"), Ev(401, 2, "b")])
    assert [(e.ts, e.pid, e.seq, e.gap) for e in out] == [
        (100, 1, 1, 0),
        (130, 2, 1, 0),
        (150, 1, 2, 50),
        (400, 1, 3, 250),
        (401, 2, 2, 271),
    ]
    assert all(isinstance(e, Ev) for e in out)  # a subclass: the event's fields are all there
    assert out[0].comm == "a"
    assert h.stats.dropped == {}


class Exit(Event, frozen=True):
    ts: u64
    pid: u32
    code: s64


def test_events_of_two_types_come_out_each_as_its_own_type() -> None:
    h = OperatorHarness(running_count("pid"))
    out = h.feed([Ev(100, 1, "a"), Exit(120, 1, 3), Ev(150, 2, "b")])
    out += h.feed([Exit(170, 2, -1)])
    assert [(type(e).__name__, e.ts, e.seq, e.gap) for e in out] == [
        ("EvRunning", 100, 1, 0), ("ExitRunning", 120, 2, 20),
        ("EvRunning", 150, 1, 0), ("ExitRunning", 170, 2, 20),
    ]  # fmt: skip
    assert [isinstance(e, Exit) for e in out] == [False, True, False, True]
    assert (out[1].code, out[3].code) == (3, -1)


def test_without_a_key_the_whole_stream_is_one_sequence() -> None:
    h = OperatorHarness(running_count(time="pid"))  # any integer field is a time
    out = h.feed([Ev(0, 5, "a"), Ev(0, 3, "b"), Ev(0, 10, "c")])
    assert [(e.seq, e.gap) for e in out] == [(1, 0), (2, -2), (3, 7)]


def test_the_gap_wraps_exactly_at_the_s64_bounds() -> None:
    h = OperatorHarness(running_count())
    top = 1 << 63
    out = h.feed([Ev(0, 1, "a"), Ev(top - 1, 1, "a"), Ev(2 * top - 1, 1, "a"), Ev(0, 1, "a")])
    # 2**63 - 1 fits; 2**63 wraps to -2**63; -(2**64 - 1) wraps to 1
    assert [e.gap for e in out] == [0, top - 1, -top, 1]


def test_events_of_keys_beyond_max_keys_are_dropped_and_counted() -> None:
    h = OperatorHarness(running_count("comm", max_keys=2))
    out = h.feed([Ev(i, 0, c) for i, c in enumerate("abcacd")])
    assert [(e.comm, e.seq) for e in out] == [("a", 1), ("b", 1), ("a", 2)]
    assert h.stats.dropped == {"key_limit": 3}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.sampled_from("xyz")), max_size=60))
def test_the_gap_wraps_at_64_bits_as_the_kernels_signed_value(pairs: list[tuple[int, str]]) -> None:
    out = OperatorHarness(running_count("comm")).feed([Ev(t, 0, c) for t, c in pairs])
    last: dict[str, int] = {}
    for e, (t, c) in zip(out, pairs, strict=True):
        expected = 0 if c not in last else (t - last[c] + 2**63) % 2**64 - 2**63
        assert e.gap == expected and -(2**63) <= e.gap < 2**63
        last[c] = t


def test_the_type_it_emits_has_the_two_fields_with_kernel_types() -> None:
    op = running_count()
    made = op.output_type(Ev)
    assert made is not None and made is op.output_type(Ev)  # made once
    assert [(f.name, f.ktype.c_type) for f in layout_of(made).fields][-2:] == [
        ("seq", "u64"),
        ("gap", "s64"),
    ]


def test_an_event_that_has_seq_or_gap_already_is_refused_in_one_line() -> None:
    class Gapped(Event, frozen=True):
        gap: s64

    with pytest.raises(PipelineDefinitionError, match="already has a field 'gap'"):
        OperatorHarness(running_count(time="gap")).feed([Gapped(1)])
    with pytest.raises(PipelineDefinitionError, match="time must be a field name"):
        running_count(time="a b")


def test_it_is_placed_in_the_kernel_with_a_filter_on_its_fields_after_it() -> None:
    layout = layout_of(Ev)
    quick = (F.seq > 1) & (F.gap < 10**9)
    assert isinstance(quick, Predicate)
    ops = [running_count("pid"), filter(quick)]
    placed = place_operators(ops, layout, record_view(layout, (Ev,)))
    assert [p.where for p in placed.places] == ["kernel", "kernel"]
    assert "BPF_HASH of 10240 keys" in placed.places[0].why
    chain = placed.chain
    assert chain is not None and chain.leaving is not None
    assert chain.leaving.event is running_count().output_type(Ev)
    assert "ft_output(ctx, &ft_record_0);" in chain.submit
    assert "(ft_record_0.gap < 1000000000LL)" in chain.submit


def test_a_key_computed_in_python_keeps_it_in_user_space() -> None:
    layout = layout_of(Ev)
    op = running_count(lambda e: e.pid % 2)
    placed = place_operators([op], layout, record_view(layout, (Ev,)))
    assert [(p.where, p.why) for p in placed.places] == [("user", "its key is a Python function")]


def test_non_struct_events_are_refused_in_one_line() -> None:
    with pytest.raises(PipelineDefinitionError, match="not an event type"):
        OperatorHarness(running_count(time="real")).feed([1.5])


