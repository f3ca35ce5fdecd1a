"""The metrics sink scraped over HTTP on loopback while a pipeline runs, and
parsed with prometheus-client's text parser."""

from __future__ import annotations

import gc
import socket
import urllib.request
from collections.abc import Sequence
from typing import Any, cast

import anyio
import anyio.to_thread
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowtrace import Operator, Pipeline, Source, SourceContext
from flowtrace.records import Bucket, CountRow, CountTable, Histogram, WindowResult
from flowtrace.sinks.metrics import MetricsSink
from flowtrace.sinkspec import SinkSpecError, sink_from_spec, with_sinks
from flowtrace.sources.syscalls import SyncCall
from flowtrace.stages import Emit

pytestmark = pytest.mark.anyio


class Gated(Source[Any]):
    """Emits ``items``, reports ``lost``, then holds until ``done`` is set."""

    name = "gated"

    def __init__(self, items: list[Any], lost: int) -> None:
        self.items, self.lost = items, lost
        self.done = anyio.Event()
        self.emitted = anyio.Event()

    async def run(self, ctx: SourceContext, emit: Emit[Any]) -> None:
        ctx.ready()
        ctx.stats.received += len(self.items)
        await emit(self.items)
        ctx.stats.lost = self.lost
        self.emitted.set()
        await self.done.wait()


class DropSyscalls(Operator[Any, Any]):
    """Drops events (counted as ``filtered``), passes records on."""

    name = "filter"

    def process(self, batch: list[Any]) -> Sequence[Any]:
        kept = [x for x in batch if not isinstance(x, SyncCall)]
        self.ctx.stats.drop("filtered", len(batch) - len(kept))
        return kept


def histogram(buckets: list[tuple[int, int, int]], window: float | None, comm: str) -> Histogram:
    return Histogram(
        field="latency",
        unit="usecs",
        scale="log2",
        buckets=[Bucket(*b) for b in buckets],
        key={"comm": comm},
        window_start=window,
        window_end=None if window is None else window + 1,
    )


ITEMS: list[Any] = [
    SyncCall(1, 2, "sync"),
    SyncCall(3, 4, "sync"),
    histogram([(0, 1, 3), (2, 3, 0), (4, 7, 9)], 0.0, "dd"),
    histogram([(2, 3, 1), (8, 15, 2)], 1.0, "dd"),
    histogram([(1, 1, 5)], None, "cat"),
    histogram([(1, 1, 7), (2, 3, 1)], None, "cat"),  # a running total: replaces
    CountTable(rows=[CountRow({"comm": "sh", "cpu": 1}, 4)], others=2, window_end=1.0),
    CountTable(rows=[CountRow({"comm": "sh", "cpu": 1}, 1)], window_end=2.0),
    WindowResult(aggregate="count", value=12, key={"pid": 3}),
    WindowResult(aggregate="count", value=13, key={"pid": 3}),
]


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


async def test_scraped_histograms_counts_and_pipeline_counters() -> None:
    source = Gated(ITEMS, lost=5)
    sink = MetricsSink(port=0)
    pipeline = with_sinks(Pipeline(source, [DropSyscalls()], sink), [])
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        sink = cast(MetricsSink, run.sink)
        await source.emitted.wait()
        with anyio.fail_after(10):
            while run.stats.stage("metrics").emitted < len(ITEMS) - 2:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert sink.host == "127.0.0.1" and sink.port != 0
        families = await anyio.to_thread.run_sync(scrape, sink.url)
        source.done.set()

    latency = samples(families["flowtrace_latency_usecs"], "_bucket")
    dd = {dict(k)["le"]: v for k, v in latency.items() if ("comm", "dd") in k}
    assert dd == {"2.0": 3, "4.0": 4, "8.0": 13, "16.0": 15, "+Inf": 15}
    assert all(float(le) in (1, 2, 4, 8, 16, 32) for le in dd if le != "+Inf")
    cat = {dict(k)["le"]: v for k, v in latency.items() if ("comm", "cat") in k}
    assert cat == {"2.0": 7, "4.0": 8, "+Inf": 8}
    count = samples(families["flowtrace_latency_usecs"], "_count")
    assert count[(("comm", "dd"),)] == 15

    keys = samples(families["flowtrace_key_count"], "_total")
    assert keys == {(("comm", "sh"), ("cpu", "1")): 5}
    assert samples(families["flowtrace_key_count_others"], "_total") == {(): 2}
    assert samples(families["flowtrace_window_count"]) == {(("pid", "3"),): 13}

    records = samples(families["flowtrace_records"], "_total")
    assert records[(("name", "Histogram"), ("type", "histogram"))] == 4
    assert (("name", "SyncCall"), ("type", "event")) not in records

    def by_stage(name: str) -> dict[str, float]:
        return {dict(k)["stage"]: v for k, v in samples(families[name], "_total").items()}

    assert by_stage("flowtrace_stage_received") == {"gated": 10, "filter": 10, "metrics": 8}
    assert by_stage("flowtrace_stage_lost") == {"gated": 5, "filter": 0, "metrics": 0}
    dropped = samples(families["flowtrace_stage_dropped"], "_total")
    assert dropped == {(("reason", "filtered"), ("stage", "filter")): 2}


async def test_binds_loopback_only_and_stops_serving_on_close() -> None:
    source = Gated([1, 2, 3], lost=0)
    sink = MetricsSink(port=0)
    pipeline = Pipeline(source, [], sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        sink = cast(MetricsSink, run.sink)
        await source.emitted.wait()
        port = sink.port
        with pytest.raises(OSError):  # nothing listens on ::1, only on 127.0.0.1
            socket.create_connection(("::1", port), timeout=5).close()
        families = await anyio.to_thread.run_sync(scrape, sink.url)
        assert "flowtrace_stage_received" in families
        assert any("serving metrics at http://127.0.0.1:" in a for a in run.stats.attached)
        source.done.set()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# The runtime leaves the sink's inbox stream unclosed when a sink's open()
# fails (flowtrace/runtime.py, reported); its ResourceWarning is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_port_in_use_fails_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pipeline = Pipeline(Gated([], 0), [], MetricsSink(port=taken.getsockname()[1]))
        with pytest.raises(Exception, match="choose another port"):
            await pipeline.run()
    del pipeline
    gc.collect()  # the leaked stream's warning, here rather than in a later test


@pytest.mark.parametrize(
    ("spec", "host", "port"),
    [
        ("metrics", "127.0.0.1", 9464),
        ("metrics:9100", "127.0.0.1", 9100),
        ("metrics:0.0.0.0:9100", "0.0.0.0", 9100),
        ("metrics:[::1]:0", "::1", 0),
    ],
)
def test_metrics_specs(spec: str, host: str, port: int) -> None:
    sink = sink_from_spec(spec)
    assert isinstance(sink, MetricsSink)
    assert (sink.host, sink.port) == (host, port)


@pytest.mark.parametrize(
    ("spec", "message"), [("metrics:http", "bad port"), ("metrics:99999", "between 0 and 65535")]
)
def test_bad_metrics_specs(spec: str, message: str) -> None:
    with pytest.raises(SinkSpecError, match=message):
        sink_from_spec(spec)


def test_docstring_states_the_bounds_log2_buckets_get() -> None:
    """The class docstring agrees with what is scraped above (le 2, 4, 8, ...)."""
    doc = " ".join((MetricsSink.__doc__ or "").split())
    assert "``0 -> 1``, ``2 -> 3``, ``4 -> 7``, ...) get the power-of-two bounds 2, 4, 8" in doc
