"""The metrics sink scraped over HTTP on loopback while a pipeline runs, and
parsed with prometheus-client's text parser."""

from __future__ import annotations

import errno
import gc
import socket
import urllib.request
from collections.abc import Sequence
from typing import Any, cast

import anyio
import anyio.to_thread
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowtrace import Operator, Pipeline, Source, SourceContext, StageError
from flowtrace.records import Bucket, CountRow, CountTable, Histogram, WindowResult
from flowtrace.sinks.metrics import MetricsSink, metric_name
from flowtrace.sinkspec import SinkSpecError, sink_from_spec
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


def histogram_with_sum(
    buckets: list[tuple[int, int, int]], window: float | None, comm: str, total: float
) -> Histogram:
    return msgspec.structs.replace(histogram(buckets, window, comm), sum=total)


async def scraped(items: list[Any], sink: MetricsSink, name: str = "") -> dict[str, Any]:
    """Run ``items`` through a pipeline named ``name`` into ``sink``, scrape it
    once everything arrived."""
    source = Gated(items, lost=5)
    pipeline = Pipeline(source, [DropSyscalls()], sink, name=name)
    events = sum(isinstance(i, SyncCall) for i in items)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        running = cast(MetricsSink, run.sink)
        await source.emitted.wait()
        with anyio.fail_after(10):
            while run.stats.stage("metrics").emitted < len(items) - events:  # noqa: ASYNC110
                await anyio.sleep(0.005)  # poll interval of this bounded wait
        assert running.host == "127.0.0.1" and running.port != 0
        families = await anyio.to_thread.run_sync(scrape, running.url)
        source.done.set()
    return families


async def test_scraped_histograms_counts_and_pipeline_counters() -> None:
    families = await scraped(ITEMS, MetricsSink(port=0), name="lesson")

    # usecs become seconds; the unit is said once; le = (high + 1) us in seconds
    latency = samples(families["flowtrace_latency_seconds"], "_bucket")
    dd = {dict(k)["le"]: v for k, v in latency.items() if ("comm", "dd") in k}
    assert dd == {"2e-06": 3, "4e-06": 4, "8e-06": 13, "1.6e-05": 15, "+Inf": 15}
    assert all(dict(k)["pipeline"] == "lesson" for k in latency)
    cat = {dict(k)["le"]: v for k, v in latency.items() if ("comm", "cat") in k}
    assert cat == {"2e-06": 7, "4e-06": 8, "+Inf": 8}
    count = samples(families["flowtrace_latency_seconds"], "_count")
    assert count[(("comm", "dd"), ("pipeline", "lesson"))] == 15
    assert samples(families["flowtrace_latency_seconds"], "_sum") == {}  # sums not known

    assert families["flowtrace_events_by_comm_cpu"].documentation == "events counted by comm, cpu"
    keys = samples(families["flowtrace_events_by_comm_cpu"], "_total")
    assert keys == {
        (("comm", "sh"), ("cpu", "1"), ("pipeline", "lesson")): 5,
        (("comm", "other"), ("cpu", "other"), ("pipeline", "lesson")): 2,  # cut by top-N
    }
    window = samples(families["flowtrace_window_count"])
    assert window == {(("pid", "3"), ("pipeline", "lesson")): 13}

    records = samples(families["flowtrace_records"], "_total")
    assert records[(("name", "Histogram"), ("pipeline", "lesson"), ("type", "histogram"))] == 4
    assert not any(("name", "SyncCall") in k for k in records)

    def by_stage(name: str) -> dict[str, float]:
        found = samples(families[name], "_total")
        assert all(dict(k)["pipeline"] == "lesson" for k in found)
        return {dict(k)["stage"]: v for k, v in found.items()}

    assert by_stage("flowtrace_stage_received") == {"gated": 10, "filter": 10, "metrics": 8}
    assert by_stage("flowtrace_stage_lost") == {"gated": 5, "filter": 0, "metrics": 0}
    dropped = samples(families["flowtrace_stage_dropped"], "_total")
    assert dropped == {(("pipeline", "lesson"), ("reason", "filtered"), ("stage", "filter")): 2}
    folded = samples(families["flowtrace_series_folded"], "_total")
    assert set(folded.values()) == {0}


async def test_sums_in_base_units_and_a_name_from_the_pipeline() -> None:
    items = [
        histogram_with_sum([(0, 1, 3), (2, 3, 1)], 0.0, "dd", 5.5),  # usecs
        histogram_with_sum([(4, 7, 2)], 1.0, "dd", 11.0),
    ]
    families = await scraped(items, MetricsSink(port=0, name="disk_latency_seconds"), "disks")
    family = families["disk_latency_seconds"]
    assert family.type == "histogram"
    labels = (("comm", "dd"), ("pipeline", "disks"))
    assert samples(family, "_sum") == {labels: pytest.approx(16.5e-6, rel=1e-12)}
    assert samples(family, "_count") == {labels: 6}
    kbytes = Histogram(
        field="bytes", unit="kbytes", scale="log2", buckets=[Bucket(4, 7, 2)], sum=10.0
    )
    families = await scraped([kbytes], MetricsSink(port=0))
    family = families["flowtrace_bytes"]  # not flowtrace_bytes_bytes
    assert samples(family, "_bucket")[(("le", "8192.0"), ("pipeline", ""))] == 2
    assert samples(family, "_sum") == {(("pipeline", ""),): 10240.0}


async def test_key_fields_become_valid_label_names() -> None:
    """Characters outside [a-zA-Z0-9_] become _, leading _ go (Prometheus
    keeps __ for itself), and a name that is reserved, empty or starts with
    a digit gets key_ in front."""
    key = {"_pid_": 1, "le": 2, "__": 3, "a-b": 4, "1x": 5, "cpu": 6}
    result = WindowResult(aggregate="count", value=9, key=key)
    families = await scraped([result], MetricsSink(port=0), "p")
    assert samples(families["flowtrace_window_count"]) == {
        (
            ("a_b", "4"),
            ("cpu", "6"),
            ("key", "3"),
            ("key_1x", "5"),
            ("key_le", "2"),
            ("pid_", "1"),
            ("pipeline", "p"),
        ): 9
    }


async def test_a_count_table_without_key_fields_is_events_by_key() -> None:
    table = CountTable(rows=[CountRow({}, 7)], window_end=1.0)
    families = await scraped([table], MetricsSink(port=0), "p")
    family = families["flowtrace_events_by_key"]
    assert samples(family, "_total") == {(("pipeline", "p"),): 7}
    assert family.documentation == "events counted"


async def test_label_sets_past_max_series_fold_into_other_and_are_counted() -> None:
    tables = [
        CountTable(
            rows=[CountRow({"pid": pid}, 1) for pid in range(start, start + 4)],
            key_fields=["pid"],
            window_end=float(start),
        )
        for start in (0, 4, 8)
    ]
    hists = [histogram([(0, 1, 1)], float(i), f"c{i}") for i in range(5)]
    families = await scraped([*tables, *hists], MetricsSink(port=0, max_series=3), "p")
    counts = samples(families["flowtrace_events_by_pid"], "_total")
    assert counts == {
        (("pid", "0"), ("pipeline", "p")): 1,
        (("pid", "1"), ("pipeline", "p")): 1,
        (("pid", "2"), ("pipeline", "p")): 1,
        (("pid", "other"), ("pipeline", "p")): 9,
    }
    comms = samples(families["flowtrace_latency_seconds"], "_count")
    assert comms == {
        (("comm", "c0"), ("pipeline", "p")): 1,
        (("comm", "c1"), ("pipeline", "p")): 1,
        (("comm", "c2"), ("pipeline", "p")): 1,
        (("comm", "other"), ("pipeline", "p")): 2,
    }
    folded = samples(families["flowtrace_series_folded"], "_total")
    assert folded == {
        (("metric", "flowtrace_events_by_pid"), ("pipeline", "p")): 9,
        (("metric", "flowtrace_latency_seconds"), ("pipeline", "p")): 2,
    }


@pytest.mark.parametrize(
    ("field", "unit", "name"),
    [
        ("lat_ns", "usecs", "flowtrace_lat_seconds"),
        ("latency_ns", "msecs", "flowtrace_latency_seconds"),
        ("bytes", "kbytes", "flowtrace_bytes"),
        ("len", "value", "flowtrace_len"),
        ("value", "value", "flowtrace_value"),
        ("size_bytes", "bytes", "flowtrace_size_bytes"),
        ("hops", "packets", "flowtrace_hops_packets"),
    ],
)
def test_metric_names_say_the_unit_once(field: str, unit: str, name: str) -> None:
    assert metric_name("flowtrace", field, unit)[0] == name


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


async def test_port_in_use_fails_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pipeline = Pipeline(Gated([], 0), [], MetricsSink(port=port))
        with pytest.raises(StageError) as failed:
            await pipeline.run()
    assert str(failed.value) == (
        f"stage 'metrics' failed: OSError: [Errno {errno.EADDRINUSE}] cannot serve metrics on"
        f" 127.0.0.1:{port}: Address already in use; choose another port with"
        " --sink metrics:HOST:PORT"
    )
    assert isinstance(failed.value.__cause__, OSError)
    assert failed.value.__cause__.errno == errno.EADDRINUSE
    del pipeline
    gc.collect()  # a stream left unclosed would warn here (warnings are errors)


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


def test_constructor_arguments() -> None:
    sink = MetricsSink(name="disk io_total", help="h", prefix="my-app", pipeline="p", max_series=1)
    assert (sink.metric, sink.help, sink.prefix, sink.pipeline) == ("disk_io", "h", "my_app", "p")
    assert (sink.max_series, sink.host, sink.port) == (1, "127.0.0.1", 9464)
    assert MetricsSink().max_series == 100
    assert MetricsSink(name="events_total_count").metric == "events_total_count"
    with pytest.raises(ValueError, match=r"^max_series 0 must be at least 1$"):
        MetricsSink(max_series=0)
    with pytest.raises(ValueError, match=r"^port -1 is not between 0 and 65535$"):
        MetricsSink(port=-1)
    assert MetricsSink(port=65535).port == 65535


async def test_a_pipeline_label_given_to_the_sink() -> None:
    result = WindowResult(aggregate="count", value=4)
    families = await scraped([result], MetricsSink(port=0, pipeline="mine"), "run name")
    assert samples(families["flowtrace_window_count"]) == {(("pipeline", "mine"),): 4}


async def test_series_of_one_metric_with_other_keys_leave_the_missing_labels_empty() -> None:
    results = [
        WindowResult(aggregate="count", value=1, key={"a": 1}),
        WindowResult(aggregate="count", value=2, key={"b": 2}),
    ]
    families = await scraped(results, MetricsSink(port=0), "p")
    assert samples(families["flowtrace_window_count"]) == {
        (("a", "1"), ("b", ""), ("pipeline", "p")): 1,
        (("a", ""), ("b", "2"), ("pipeline", "p")): 2,
    }
    assert {name: family.documentation for name, family in families.items()} == {
        "flowtrace_records": "records received",
        "flowtrace_window_count": "latest window count",
        "flowtrace_series_folded": (
            "results of keys past max_series, folded into the 'other' series"
        ),
        "flowtrace_stage_received": "events a stage took in",
        "flowtrace_stage_emitted": "events a stage passed on",
        "flowtrace_stage_lost": "events lost before delivery (kernel buffer full)",
        "flowtrace_stage_dropped": "events a stage dropped, by reason",
    }
