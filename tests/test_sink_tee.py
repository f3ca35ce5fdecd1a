"""The fan-out sink: every sink gets every batch, also after one of them
failed, and what a failing sink did not deliver is counted."""

from __future__ import annotations

from typing import Any

import pytest

from flowtrace import Pipeline, Run, Sink, StageError
from flowtrace.fanout import TeeSink
from flowtrace.sinks.ndjson import NdjsonSink
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
    run = Run(Pipeline(ListSource(range(10), batch_size=10), [], tee))
    with pytest.raises(StageError, match="sink 'broken' failed: RuntimeError: broken sink"):
        await run.run()
    assert before.items == after.items == list(range(10))
    children = run.stats.stages[run.stats.chain_length :]
    by_name = {s.name: s for s in children}
    assert by_name["broken"].dropped == {"sink_failed": 10}
    for stats in children:
        assert stats.received == 10
        assert stats.received == stats.emitted + stats.dropped_total, stats


async def test_first_failure_is_raised_and_a_counting_sink_is_trusted() -> None:
    after = CollectSink[int]()
    tee = TeeSink([NdjsonSink("/dev/full", reports=False), Broken(), after])
    run = Run(Pipeline(ListSource(range(10), batch_size=10), [], tee))
    with pytest.raises(StageError, match="sink 'ndjson' failed: OSError"):
        await run.run()
    assert after.items == list(range(10))
    ndjson, broken, _ = run.stats.stages[run.stats.chain_length :]
    assert ndjson.dropped == {"write_error": 10}, "its own count, not sink_failed"
    assert broken.dropped == {"sink_failed": 10}
