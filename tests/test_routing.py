"""The runtime routes side records past operators: ahead of the results of
their batch, never into ``process`` or an AsyncOperator's input, unless the
operator asks for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pytest

from flowtrace.records import JoinIncomplete, LateEvent, SideRecord
from flowtrace.routing import has_side_records, process_batch, route_side_records
from flowtrace.stages import AsyncOperator, Emit, Operator
from flowtrace.testing import CollectSink, ListSource, OperatorHarness

INCOMPLETE = JoinIncomplete(key={"k": 1}, start=0, reason="timeout", waited=1.0)
LATE = LateEvent(event=5, watermark=1.0, window_start=0.0, window_end=1.0)


class Calls(Operator[Any, Any]):
    """Records every batch ``process`` gets and emits its length."""

    def __init__(self) -> None:
        self.name = "calls"

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.batches: list[list[Any]] = []

    def process(self, batch: list[Any]) -> Sequence[Any]:
        self.batches.append(batch)
        return [len(batch)]


class SeesSideRecords(Calls):
    """The same, asking for side records."""

    accepts_side_records: ClassVar[bool] = True


def test_side_records_go_ahead_and_process_gets_only_events() -> None:
    h = OperatorHarness(Calls())
    assert h.feed([1, INCOMPLETE, 2, LATE, 3]) == [INCOMPLETE, LATE, 3]
    assert h.feed([LATE]) == [LATE, 0]  # process still runs once for the batch
    assert h.feed([4, 5]) == [2]
    assert h.operator.batches == [[1, 2, 3], [], [4, 5]]  # type: ignore[attr-defined]
    assert h.stats.received == 8 and h.stats.emitted == 6


def test_an_operator_that_accepts_side_records_gets_whole_batches() -> None:
    h = OperatorHarness(SeesSideRecords())
    assert h.feed([1, INCOMPLETE, 2]) == [3]
    assert h.operator.batches == [[1, INCOMPLETE, 2]]  # type: ignore[attr-defined]


def test_routing_without_side_records_hands_the_batch_over_as_is() -> None:
    batch = [1, 2, 3]
    assert route_side_records(Calls(), batch) == ([], batch)
    assert route_side_records(Calls(), batch)[1] is batch
    assert not has_side_records(batch) and has_side_records([1, LATE])
    assert route_side_records(SeesSideRecords(), [LATE, 1]) == ([], [LATE, 1])
    op = OperatorHarness(Calls()).operator
    assert process_batch(op, [LATE, 7, INCOMPLETE]) == [LATE, INCOMPLETE, 1]


class Seen(AsyncOperator[Any, Any]):
    """Passes on every batch it reads, after recording it."""

    def __init__(self) -> None:
        self.name = "seen"
        self.seen: list[list[Any]] = []

    async def run(self, batches: AsyncIterator[list[Any]], emit: Emit[Any]) -> None:
        async for batch in batches:
            self.seen.append(batch)
            await emit(list(batch))


@pytest.mark.anyio
async def test_an_async_operator_never_reads_side_records() -> None:
    """Side records are forwarded by the runtime ahead of the batch; the
    iterator an AsyncOperator reads yields only events (a batch of side
    records only yields nothing)."""
    op = Seen()
    sink = CollectSink[Any]()
    source = ListSource([1, INCOMPLETE, LATE, LATE, 2, 3], batch_size=2)
    stats = await (source | op | sink).run()
    assert op.seen == [[1], [2, 3]]
    assert sink.items == [INCOMPLETE, 1, LATE, LATE, 2, 3]
    assert stats.stages[1].received == 6 and stats.stages[1].emitted == 6
    assert not any(isinstance(e, SideRecord) for b in op.seen for e in b)
