"""join(start, complete, key=...): pairs equal a reference join; bounds hold
under a flood; expiry runs without events; every start is accounted for."""

from __future__ import annotations

import re
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtrace.clock import ManualClock
from flowtrace.context import SourceContext
from flowtrace.errors import PipelineDefinitionError, StageError
from flowtrace.operators import join, log2_histogram
from flowtrace.records import Histogram, JoinIncomplete, JoinPair, LateEvent
from flowtrace.stages import Emit, Sink, Source
from flowtrace.testing import CollectSink, ListSource, OperatorHarness


class Issue(msgspec.Struct, frozen=True):
    ts: int
    dev: int
    sector: int
    n: int = 0


class Complete(msgspec.Struct, frozen=True):
    ts: int
    dev: int
    sector: int
    n: int = 0


class Other(msgspec.Struct, frozen=True):
    ts: int


def reference_join(events: list[Issue | Complete]) -> list[tuple[int, int]]:
    """For each complete, the latest earlier event of its key: a start that no
    complete consumed pairs with it (a later start replaces an earlier one)."""
    pairs = []
    consumed: set[int] = set()
    for i, c in enumerate(events):
        if not isinstance(c, Complete):
            continue
        for j in range(i - 1, -1, -1):
            e = events[j]
            if (e.dev, e.sector) != (c.dev, c.sector):
                continue
            if isinstance(e, Issue) and j not in consumed:
                pairs.append((e.n, c.n))
                consumed.add(j)
            break  # the latest event of the key decides
    return pairs


requests = st.lists(
    st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 4)), max_size=200
).map(
    lambda xs: [
        (Issue if start else Complete)(ts=i * 1000, dev=dev, sector=sector, n=i)
        for i, (start, dev, sector) in enumerate(xs)
    ]
)


@settings(max_examples=300, deadline=None)
@given(requests, st.integers(1, 30))
def test_pairs_equal_a_reference_join(events: list[Any], batch: int) -> None:
    h = OperatorHarness(join(Issue, Complete, key=("dev", "sector"), timeout=None))
    for b in range(0, len(events), batch):
        h.feed(events[b : b + batch])
    h.finish()
    pairs = [r for r in h.emitted if isinstance(r, JoinPair)]
    assert [(p.start.n, p.complete.n) for p in pairs] == reference_join(events)
    for p in pairs:
        assert p.latency_ns == p.complete.ts - p.start.ts
        assert p.key == {"dev": p.start.dev, "sector": p.start.sector}
    # every start became exactly one pair or one incomplete
    incompletes = [r for r in h.emitted if isinstance(r, JoinIncomplete)]
    starts = [e.n for e in events if isinstance(e, Issue)]
    assert sorted([p.start.n for p in pairs] + [r.start.n for r in incompletes]) == starts
    completes = sum(isinstance(e, Complete) for e in events)
    assert h.stats.dropped.get("complete_without_start", 0) == completes - len(pairs)
    assert h.stats.dropped.get("start_replaced", 0) == sum(
        r.reason == "replaced" for r in incompletes
    )
    assert h.stats.dropped.get("pending_at_end", 0) == sum(
        r.reason == "end_of_stream" for r in incompletes
    )


def test_keep_policy_keeps_the_first_start() -> None:
    h = OperatorHarness(join(Issue, Complete, key="sector", on_repeat="keep"))
    out = h.feed([Issue(1, 0, 7, n=1), Issue(5, 0, 7, n=2), Complete(9, 0, 7, n=3)])
    assert [type(r).__name__ for r in out] == ["JoinIncomplete", "JoinPair"]
    assert isinstance(out[0], JoinIncomplete) and (out[0].start.n, out[0].reason) == (2, "repeated")
    assert isinstance(out[1], JoinPair) and (out[1].start.n, out[1].latency_ns) == (1, 8)
    assert h.stats.dropped == {"start_repeated": 1}


def test_a_flood_of_starts_stays_within_the_bound() -> None:
    h = OperatorHarness(join(Issue, Complete, key="sector", max_pending=1000))
    flood = [Issue(i, 0, i) for i in range(1_000_000)]
    for b in range(0, len(flood), 4096):
        assert h.feed(flood[b : b + 4096]) == []
        assert h.operator.pending <= 1000  # type: ignore[attr-defined]
    assert h.stats.dropped == {"pending_limit": 999_000}
    out = h.finish()
    assert len(out) == 1000
    assert h.stats.dropped == {"pending_limit": 999_000, "pending_at_end": 1000}


def test_expiry_runs_on_tick_without_events() -> None:
    clock = ManualClock()
    h = OperatorHarness(join(Issue, Complete, key="sector", timeout=2.0), clock)
    h.feed([Issue(0, 0, 1)])
    clock.advance(1.0)
    h.feed([Issue(0, 0, 2)])
    assert h.advance(0.5) == []
    out = h.advance(0.5)  # 2 s after the first start: it expires, the second waits
    assert [(r.start.sector, r.reason, r.waited) for r in out] == [(1, "timeout", 2.0)]
    out = h.advance(5.0)
    assert [(r.start.sector, r.reason, r.waited) for r in out] == [(2, "timeout", 6.0)]
    assert h.stats.dropped == {"expired": 2}
    assert h.feed([Complete(1, 0, 2)]) == []  # too late: its start expired
    assert h.stats.dropped == {"expired": 2, "complete_without_start": 1}


def test_other_events_pass_and_arrival_time_latency() -> None:
    clock = ManualClock()
    h = OperatorHarness(
        join(lambda e: isinstance(e, Issue), Complete, key="sector", time_field=None), clock
    )
    h.feed([Issue(0, 0, 1), Other(5)])
    clock.advance(0.25)
    out = h.feed([Complete(0, 0, 1)])
    assert [r.latency_ns for r in out] == [250_000_000]
    assert h.emitted[0] == Other(5)


def test_predicate_join_passes_side_records_ahead() -> None:
    """Side records from upstream (a late event has no ``dev``) never reach
    the start/complete predicates or the key; they go on ahead of the
    batch's pairs."""
    late = LateEvent(event=Other(1), watermark=1.0, window_start=0.0, window_end=1.0)
    earlier = JoinIncomplete(key={"sector": 4}, start=Other(2), reason="timeout", waited=1.0)
    h = OperatorHarness(
        join(lambda e: isinstance(e, Issue) and e.dev == 0, lambda e: e.dev == 0, key="sector")
    )
    out = h.feed([late, Issue(0, 0, 1), earlier, Complete(7, 0, 1), late])
    assert [r if isinstance(r, JoinIncomplete | LateEvent) else r.latency_ns for r in out] == [
        late,
        earlier,
        late,
        7,
    ]
    assert h.feed([earlier]) == [earlier]
    assert h.stats.dropped == {}


def test_emit_incomplete_false_only_counts() -> None:
    h = OperatorHarness(join(Issue, Complete, key="sector", emit_incomplete=False))
    assert h.feed([Issue(0, 0, 1), Issue(1, 0, 1)]) == []
    assert h.finish() == []
    assert h.stats.dropped == {"start_replaced": 1, "pending_at_end": 1}


def test_join_then_histogram_ignores_side_records() -> None:
    """disklatency: incompletes travel past the histogram to the sink."""
    h1 = OperatorHarness(join(Issue, Complete, key="sector"))
    h2 = OperatorHarness(log2_histogram("latency_ns", unit="usecs", divisor=1000))
    for batch in (
        [Issue(0, 0, 1), Issue(0, 0, 2), Complete(3_000, 0, 1)],
        [Issue(10_000, 0, 2), Complete(50_000, 0, 2)],
    ):
        h2.feed(h1.feed(batch))
    h2.feed(h1.finish())
    h2.finish()
    [replaced, hist] = h2.emitted
    assert isinstance(replaced, JoinIncomplete) and replaced.reason == "replaced"
    assert isinstance(hist, Histogram)
    assert [(b.low, b.high, b.count) for b in hist.buckets if b.count] == [(2, 3, 1), (32, 63, 1)]


@pytest.mark.anyio
async def test_missing_timestamp_names_the_fix() -> None:
    class NoTs(msgspec.Struct, frozen=True):
        sector: int

    pipeline = (
        ListSource([Issue(0, 0, 1), NoTs(1)])
        | join(Issue, NoTs, key="sector")
        | CollectSink[object]()
    )
    line = (
        "join: event NoTs has no timestamp field 'ts': pass time_field=<its nanosecond"
        " timestamp field>, or time_field=None to time by arrival"
    )
    with pytest.raises(StageError, match=re.escape(line)):
        await pipeline.run()


def test_bad_arguments() -> None:
    with pytest.raises(
        PipelineDefinitionError, match="on_repeat='latest'; use 'replace' or 'keep'"
    ):
        join(Issue, Complete, key="sector", on_repeat="latest")
    with pytest.raises(PipelineDefinitionError, match="timeout must be a positive number"):
        join(Issue, Complete, key="sector", timeout=0)
    with pytest.raises(PipelineDefinitionError, match="event type or a predicate"):
        join(1, Complete, key="sector")  # type: ignore[arg-type]


class StartsThenWait(Source[Issue]):
    """Emits two starts, then stays silent until the test lets it end."""

    def __init__(self, done: anyio.Event) -> None:
        self.done = done

    async def run(self, ctx: SourceContext, emit: Emit[Issue]) -> None:
        ctx.ready()
        ctx.stats.received += 2
        await emit([Issue(0, 0, 1), Issue(0, 0, 2)])
        with anyio.fail_after(30):
            await self.done.wait()


class SignalOnIncomplete(Sink[Any]):
    def __init__(self, done: anyio.Event) -> None:
        self.done = done
        self.items: list[Any] = []

    async def write(self, batch: list[Any]) -> None:
        self.items += batch
        if sum(isinstance(r, JoinIncomplete) for r in self.items) == 2:
            self.done.set()


@pytest.mark.anyio
async def test_expiry_reaches_the_sink_while_the_source_is_silent() -> None:
    done = anyio.Event()
    sink = SignalOnIncomplete(done)
    source = StartsThenWait(done)
    pipeline = source | join(Issue, Complete, key="sector", timeout=0.05) | sink
    stats = await pipeline.run()
    assert [(r.start.sector, r.reason) for r in sink.items] == [(1, "timeout"), (2, "timeout")]
    assert stats.stages[1].dropped == {"expired": 2}


class Done(msgspec.Struct, frozen=True):
    """A completion naming its key differently from the start."""

    ts: int
    disk: int
    block: int


def test_complete_key_reads_the_completes_own_fields() -> None:
    h = OperatorHarness(
        join(Issue, Done, key=("dev", "sector"), complete_key=("disk", "block"), timeout=None)
    )
    out = h.feed(
        [Issue(10, 1, 7, n=1), Issue(20, 1, 8, n=2), Done(35, 1, 8), Done(50, 2, 7), Done(60, 1, 7)]
    )
    assert [(p.start.n, p.complete.ts, p.latency_ns) for p in out] == [(2, 35, 15), (1, 60, 50)]
    assert out[0].key == {"dev": 1, "sector": 8}
    assert h.stats.dropped == {"complete_without_start": 1}


def test_a_join_is_named_join_unless_named() -> None:
    assert join(Issue, Complete, key="sector").name == "join"
    assert join(Issue, Complete, key="sector", name="disk io").name == "disk io"
