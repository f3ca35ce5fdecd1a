"""merge_by: results of many hosts added up per wall-clock window, and
receipts: how a source learns that what it emitted reached the sink."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from flowtrace.context import SourceContext
from flowtrace.errors import PipelineDefinitionError
from flowtrace.operators import Tumbling, count, filter, log2_histogram, merge_by
from flowtrace.records import (
    Bucket,
    CountRow,
    CountTable,
    EmptyWindows,
    Histogram,
    LateEvent,
    Receipt,
    WindowResult,
)
from flowtrace.stages import Emit, Pipeline, Sink, Source
from flowtrace.testing import OperatorHarness

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def hist(host: str, start: float, buckets: list[tuple[int, int, int]], *, length: float = 10.0,
         scale: str = "log2", key: dict[str, Any] | None = None) -> Histogram:  # fmt: skip
    return Histogram(
        field="lat_ns",
        unit="usecs",
        scale=scale,
        buckets=[Bucket(*b) for b in buckets],
        key=key,
        wall_start=utc(T0 + start),
        wall_end=utc(T0 + start + length),
        hosts=[host],
    )


def merged_buckets(h: Histogram) -> list[tuple[int, int, int]]:
    return [(b.low, b.high, b.count) for b in h.buckets]


def test_log2_histograms_add_bucket_for_bucket_per_window() -> None:
    h = OperatorHarness(merge_by(window=Tumbling(10), lateness=5))
    assert h.feed([hist("web1", 0, [(0, 1, 2), (2, 3, 0), (4, 7, 5)])]) == []
    assert h.feed([hist("web2", 0, [(8, 15, 1)])]) == []  # not 5 s past window 0
    assert h.feed([hist("web1", 10, [(0, 1, 1)])]) == []  # web2 is not
    out = h.feed([hist("web2", 10, [(2, 3, 4)])])  # every host is 5 s past window 0
    assert len(out) == 1 and isinstance(out[0], Histogram)
    first = out[0]
    assert merged_buckets(first) == [(0, 1, 2), (2, 3, 0), (4, 7, 5), (8, 15, 1)]
    assert (first.wall_start, first.wall_end, first.window_start) == (utc(T0), utc(T0 + 10), T0)
    assert first.hosts == ["web1", "web2"]
    assert first.inputs == [f"web1@{utc(T0).isoformat()}", f"web2@{utc(T0).isoformat()}"]
    (second,) = h.finish()
    assert isinstance(second, Histogram)
    assert merged_buckets(second) == [(0, 1, 1), (2, 3, 4)]
    assert second.wall_start == utc(T0 + 10)


def test_linear_histograms_and_per_key_histograms_stay_apart() -> None:
    h = OperatorHarness(merge_by(window=10.0))
    h.feed([
        hist("a", 0, [(3, 3, 1)], scale="linear"),
        hist("b", 0, [(5, 5, 2)], scale="linear"),
        hist("a", 0, [(3, 3, 7)], scale="linear", key={"disk": "vda"}),
    ])  # fmt: skip
    out = h.finish()
    plain, keyed = out
    assert isinstance(plain, Histogram) and isinstance(keyed, Histogram)
    assert merged_buckets(plain) == [(3, 3, 1), (4, 4, 0), (5, 5, 2)]
    assert (keyed.key, merged_buckets(keyed), keyed.hosts) == ({"disk": "vda"}, [(3, 3, 7)], ["a"])


def table(host: str, rows: list[tuple[str, int]], others: int = 0) -> CountTable:
    return CountTable(
        rows=[CountRow({"comm": c}, n) for c, n in rows],
        others=others,
        key_fields=["comm"],
        wall_start=utc(T0),
        wall_end=utc(T0 + 10),
        hosts=[host],
    )


def test_count_tables_add_by_key_and_cut_to_top_after_the_merge() -> None:
    h = OperatorHarness(merge_by(window=10.0, top=2))
    h.feed([table("a", [("sh", 3), ("ls", 4), ("dd", 1)]), table("b", [("dd", 9), ("ls", 1)], 3)])
    (merged,) = h.finish()
    assert isinstance(merged, CountTable)
    # dd is third on host a and would have been cut there: the fleet's first
    assert [(r.key["comm"], r.count) for r in merged.rows] == [("dd", 10), ("ls", 5)]
    assert merged.others == 3 + 3  # sh, and what host b had cut
    assert merged.key_fields == ["comm"]


@pytest.mark.parametrize(
    ("aggregate", "values", "merged"),
    [("count", [3, 4], 7), ("sum", [10, 5], 15), ("min", [3, 1], 1), ("max", [3, 9], 9),
     ("rate", [1.5, 2.0], 3.5), ("collect", [[1], [2, 3]], [1, 2, 3])],
)  # fmt: skip
def test_window_results_merge_by_their_aggregate(
    aggregate: str, values: list[Any], merged: Any
) -> None:
    h = OperatorHarness(merge_by(window=10.0))
    h.feed([
        WindowResult(
            aggregate=aggregate, value=v, field="lat_ns", key={"disk": "vda"},
            wall_start=utc(T0 + 2), wall_end=utc(T0 + 7), hosts=[host],
        )
        for v, host in zip(values, ["a", "b"], strict=True)
    ])  # fmt: skip
    assert h.finish() == [
        WindowResult(
            aggregate=aggregate, value=merged, field="lat_ns", key={"disk": "vda"},
            window_start=T0, window_end=T0 + 10, wall_start=utc(T0), wall_end=utc(T0 + 10),
            hosts=["a", "b"], inputs=[f"{h}@{utc(T0 + 2).isoformat()}" for h in "ab"],
        )
    ]  # fmt: skip


def test_results_of_other_fields_or_keys_stay_apart() -> None:
    h = OperatorHarness(merge_by(window=10.0, keep=()))
    h.feed([
        WindowResult(aggregate="sum", value=v, field=f, key=k, wall_start=utc(T0),
                     wall_end=utc(T0 + 10), hosts=[host])
        for v, f, k, host in [(1, "a", None, "x"), (2, "b", None, "x"), (4, "a", {"cpu": 1}, "x"),
                              (8, "a", None, "y"), (16, "b", None, "y")]
    ])  # fmt: skip
    out = h.finish()
    assert [(r.field, r.key, r.value, r.hosts) for r in out if isinstance(r, WindowResult)] == [
        ("a", None, 9, None), ("b", None, 18, None), ("a", {"cpu": 1}, 4, None)
    ]  # fmt: skip


def test_results_fall_in_the_fleet_window_holding_their_middle() -> None:
    h = OperatorHarness(merge_by(window=10.0))
    # agents' windows started at other moments; shorter ones add up
    h.feed([hist("a", 3, [(0, 1, 1)]), hist("b", 6, [(0, 1, 1)]),
            hist("c", 1, [(0, 1, 1)], length=2), hist("c", 7, [(0, 1, 1)], length=2)])  # fmt: skip
    windows = [(r.wall_start, r.total, r.hosts) for r in h.finish() if isinstance(r, Histogram)]
    assert windows == [(utc(T0), 3, ["a", "c"]), (utc(T0 + 10), 1, ["b"])]


def test_late_and_duplicate_results_are_counted_not_merged() -> None:
    h = OperatorHarness(merge_by(window=10.0, lateness=0))
    first = hist("a", 0, [(0, 1, 1)])
    h.feed([first, first, hist("a", 10, [(0, 1, 1)])])
    assert h.stats.dropped == {"duplicate": 1}
    late = hist("b", 0, [(0, 1, 1)])
    out = h.feed([late])  # window 0 went out when a passed it
    # the watermark: the least advanced host's latest end (b's, now T0 + 10)
    assert out == [LateEvent(event=late, watermark=T0 + 10, window_start=T0, window_end=T0 + 10)]
    assert h.stats.dropped == {"duplicate": 1, "late": 1}


def test_a_silent_host_holds_windows_back_at_most_max_wait() -> None:
    h = OperatorHarness(merge_by(window=10.0, lateness=100, max_wait=30))
    h.feed([hist("a", 0, [(0, 1, 1)]), hist("b", 0, [(0, 1, 1)])])
    assert h.feed([hist("a", 10, [(0, 1, 1)]), hist("a", 20, [(0, 1, 1)])]) == []  # b is silent
    out = h.feed([hist("a", 30, [(0, 1, 1)])])  # a is 30 s past window 0's end
    assert [(r.wall_start, r.hosts) for r in out] == [(utc(T0), ["a", "b"])]


def test_worst_hosts_by_99th_percentile() -> None:
    h = OperatorHarness(merge_by(window=10.0, worst=2))
    h.feed([
        hist("fast", 0, [(0, 1, 50)]),  # as fast as mid, fewer events: ranked after it
        hist("slow", 0, [(0, 1, 50), (64, 127, 50)]),
        hist("mid", 0, [(0, 1, 99), (1024, 2047, 1)]),  # the 99th of 100 is in 0..1
    ])  # fmt: skip
    merged, worst = h.finish()
    assert isinstance(merged, Histogram)
    described = (merged.field, merged.unit, merged.scale, merged.key)
    assert described == ("lat_ns", "usecs", "log2", None)
    at = utc(T0).isoformat()
    assert worst == WindowResult(
        aggregate="worst_hosts",
        field="lat_ns",
        value=[{"host": "slow", "p99": 127, "count": 100}, {"host": "mid", "p99": 1, "count": 100}],
        window_start=T0, window_end=T0 + 10, wall_start=utc(T0), wall_end=utc(T0 + 10),
        hosts=["fast", "mid", "slow"], inputs=[f"fast@{at}", f"mid@{at}", f"slow@{at}"],
    )  # fmt: skip


def test_whole_run_results_merge_into_one_window_emitted_at_the_end() -> None:
    h = OperatorHarness(merge_by(window=10.0))
    whole = [
        WindowResult(aggregate="count", value=v, hosts=[host]) for v, host in [(2, "a"), (5, "b")]
    ]
    passing = ["an event", EmptyWindows(windows=3, step=1.0)]
    assert h.feed(whole[:1]) == []  # no wall-clock bounds: no host has passed any window
    whole = whole[1:]
    assert h.feed([passing[0], hist("a", 0, [(0, 1, 1)]), passing[1], whole[0]]) == (
        passing
    )  # other records pass on at once; nothing else is due: no host has passed a window
    window_0, merged = h.finish()  # windows in order, the whole run last
    assert isinstance(window_0, Histogram) and window_0.window_start == T0
    assert merged == WindowResult(
        aggregate="count", value=7, hosts=["a", "b"], inputs=["a@None", "b@None"]
    )


def test_the_end_emits_windows_oldest_first_whatever_order_they_came_in() -> None:
    h = OperatorHarness(merge_by(window=10.0, lateness=100))
    h.feed([WindowResult(aggregate="count", value=1, hosts=["a"]), hist("a", 20, [(0, 1, 1)]),
            hist("a", 10, [(0, 1, 2)]), hist("a", 0, [(0, 1, 4)])])  # fmt: skip
    assert [(type(r).__name__, r.window_start) for r in h.finish()] == [
        ("Histogram", T0), ("Histogram", T0 + 10), ("Histogram", T0 + 20), ("WindowResult", None)
    ]  # fmt: skip


def test_groups_past_max_groups_are_counted_and_left_out() -> None:
    h = OperatorHarness(merge_by(window=10.0, lateness=100, max_groups=2))
    h.feed([hist("a", 0, [(0, 1, 1)]), hist("a", 10, [(0, 1, 2)]), hist("a", 20, [(0, 1, 4)]),
            hist("b", 10, [(0, 1, 8)])])  # fmt: skip
    assert [(r.window_start, r.total) for r in h.finish() if isinstance(r, Histogram)] == [
        (T0, 1), (T0 + 10, 10)
    ]  # fmt: skip
    assert h.stats.dropped == {"group_limit": 1}


def test_results_of_an_aggregate_merge_by_cannot_add_pass_as_the_first() -> None:
    h = OperatorHarness(merge_by(window=10.0))
    firsts = [
        WindowResult(aggregate="p50", value=v, field="lat", wall_start=utc(T0),
                     wall_end=utc(T0 + 10), hosts=[host])
        for v, host in [(3, "a"), (9, "b")]
    ]  # fmt: skip
    h.feed(firsts)
    assert h.finish() == [firsts[0]]


def test_histograms_without_counts_and_of_other_scales() -> None:
    h = OperatorHarness(merge_by(window=10.0, worst=1))
    h.feed([hist("a", 0, [(0, 1, 0), (2, 3, 0)]), hist("b", 0, [])])
    merged, worst = h.finish()
    assert isinstance(merged, Histogram) and merged.buckets == []
    assert isinstance(worst, WindowResult)
    assert worst.value == [{"host": "a", "p99": 0, "count": 0}]  # ties: by host
    h = OperatorHarness(merge_by(window=10.0))
    h.feed([hist("a", 0, [(11, 100, 3), (1, 10, 2)], scale="exp"),
            hist("b", 0, [(1, 10, 5), (101, 1000, 0)], scale="exp")])  # fmt: skip
    (merged,) = h.finish()
    assert isinstance(merged, Histogram)
    assert merged_buckets(merged) == [(1, 10, 7), (11, 100, 3)]


def test_bad_arguments_fail_in_one_line() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"keep=.*only 'host'"):
        merge_by(keep=("cpu",))
    with pytest.raises(PipelineDefinitionError, match="lateness must be >= 0"):
        merge_by(lateness=-1)
    with pytest.raises(PipelineDefinitionError, match="window must be a positive number"):
        merge_by(window=0)


def test_merge_holds_a_receipt_until_its_results_are_emitted() -> None:
    h = OperatorHarness(merge_by(window=10.0, lateness=5))
    r1, r2 = Receipt(source="s", token=1), Receipt(source="s", token=2)
    assert h.feed([hist("a", 0, [(0, 1, 1)]), r1]) == []
    out = h.feed([hist("a", 10, [(0, 1, 1)]), r2])
    # window 0 is out: receipt 1 vouches only for it; receipt 2 waits for window 10
    assert [type(r).__name__ for r in out] == ["Histogram", "Receipt"] and out[-1] == r1
    assert h.finish()[-1] == r2


def test_a_receipt_is_the_last_item_of_its_batch() -> None:
    h = OperatorHarness(merge_by(window=10.0))
    receipt = Receipt(source="s", token=1)
    first, second = hist("a", 0, [(0, 1, 1)]), hist("b", 0, [(0, 1, 2)])
    assert h.feed([first, second, receipt]) == []  # held with window 0
    out = h.feed([hist("a", 10, [(0, 1, 1)]), hist("b", 10, [(0, 1, 1)])])
    assert [type(r).__name__ for r in out] == ["Histogram", "Receipt"]
    assert isinstance(out[0], Histogram) and out[0].total == 3 and out[1] == receipt


class Batches(Source[Any]):
    """Emits each batch with a receipt behind it, as a durable source does."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self.name = "src"

    async def run(self, ctx: SourceContext, emit: Emit[Any]) -> None:
        ctx.ready()
        for token, batch in enumerate(self.batches, 1):
            ctx.stats.received += len(batch)
            await emit([*batch, Receipt(source="src", token=token)])


class Watching(Sink[Any]):
    """Keeps what it is given and the receipts the run had noted at each write."""

    def __init__(self) -> None:
        self.name = "watch"
        self.items: list[Any] = []
        self.seen: list[dict[str, int]] = []

    async def write(self, batch: list[Any]) -> None:
        self.items += batch
        self.seen.append(dict(self.ctx.pipeline.receipts))


async def run_with(operators: Sequence[Any]) -> tuple[Watching, Any]:
    plan = Pipeline(Batches([[1, 2], [3], [4, 5]]), operators, Watching())
    from flowtrace.runtime import Run

    run = Run(plan)
    stats = await run.run()
    assert isinstance(run.sink, Watching)
    return run.sink, stats


async def test_receipts_pass_stateless_operators_behind_their_batch() -> None:
    sink, stats = await run_with([filter(lambda v: v != 3)])
    assert sink.items == [1, 2, 4, 5]  # the sink never sees a receipt
    # each write comes before its own receipt is noted and after the previous
    # ones' (batch 2 became nothing, so its receipt went through on its own)
    assert sink.seen == [{}, {"src": 2}]
    assert stats.receipts == {"src": 3}
    src, op, out = stats.chain
    assert (src.received, src.emitted, op.received, op.emitted) == (5, 5, 5, 4)
    assert (out.received, out.emitted) == (4, 4)


async def test_receipts_wait_in_front_of_operators_that_hold_events() -> None:
    sink, stats = await run_with([count(by=lambda v: v % 2)])
    assert [type(i).__name__ for i in sink.items] == ["CountTable"]
    assert sink.seen == [{}]  # no receipt went past the count before its table
    assert stats.receipts == {"src": 3}


async def test_windows_pass_receipts_only_after_finish() -> None:
    ops = [log2_histogram(lambda v: v, every=Tumbling(1.0))]
    sink, stats = await run_with(ops)
    assert all(s == {} for s in sink.seen)
    assert stats.receipts == {"src": 3}
