"""The fan-out sink: every sink gets every batch, also after one of them
failed, and what a failing sink did not deliver is counted."""

from __future__ import annotations

from typing import Any

import pytest

from flowtrace import Pipeline, Sink, StageError
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.sinks.tee import TeeSink
from flowtrace.testing import CollectSink, ListSource

pytestmark = pytest.mark.anyio


class Broken(Sink[Any]):
    """Raises on every batch and counts nothing (a sink breaking the rules)."""

    name = "broken"

    async def write(self, batch: list[Any]) -> None:
        raise RuntimeError("broken sink")


async def test_sinks_after_a_failing_one_still_get_the_batch() -> None:
    before, after = CollectSink[int](), CollectSink[int]()
    tee = TeeSink([before, Broken(), after])
    pipeline = Pipeline(ListSource(range(10), batch_size=10), [], tee)
    tee.bind_pipeline(pipeline.stats)
    with pytest.raises(StageError, match="sink 'broken' failed: RuntimeError: broken sink"):
        await pipeline.run()
    assert before.items == after.items == list(range(10))
    by_name = {s.name: s for s in tee.stats}
    assert by_name["broken"].dropped == {"sink_failed": 10}
    for stats in tee.stats:
        assert stats.received == 10
        assert stats.received == stats.emitted + stats.dropped_total, stats


async def test_first_failure_is_raised_and_a_counting_sink_is_trusted() -> None:
    after = CollectSink[int]()
    tee = TeeSink([NdjsonSink("/dev/full", reports=False), Broken(), after])
    pipeline = Pipeline(ListSource(range(10), batch_size=10), [], tee)
    with pytest.raises(StageError, match="sink 'ndjson' failed: OSError"):
        await pipeline.run()
    assert after.items == list(range(10))
    ndjson, broken, _ = tee.stats
    assert ndjson.dropped == {"write_error": 10}, "its own count, not sink_failed"
    assert broken.dropped == {"sink_failed": 10}
