"""The OTLP/HTTP metrics sink against a real OTLP/HTTP receiver: an HTTP
server in the test decoding every request with the opentelemetry-proto
classes, checking every bucket."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from flowtrace.records import Bucket, CountRow, CountTable, Histogram, WindowResult
from flowtrace.runtime import Run
from flowtrace.sinks.otlp import OtlpSink, log2_exponential
from flowtrace.sinkspec import SinkSpecError
from flowtrace.stages import Pipeline
from flowtrace.testing import ListSource

pytestmark = pytest.mark.anyio


class Receiver:
    """An OTLP/HTTP metrics receiver on a loopback port."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


HIST = Histogram(
    field="lat_ns",
    unit="usecs",
    scale="log2",
    buckets=[Bucket(0, 1, 3), Bucket(2, 3, 0), Bucket(4, 7, 5), Bucket(8, 15, 1)],
    key={"disk": "vda"},
    wall_start=datetime.fromtimestamp(1_800_000_000.0, timezone.utc),
    wall_end=datetime.fromtimestamp(1_800_000_010.0, timezone.utc),
    hosts=["web1"],
)


def test_log2_buckets_map_onto_scale_0() -> None:
    # slot 1 (0 -> 1) is the zero bucket; 2..3 is index 1: (2, 4]; 8..15 index 3
    assert log2_exponential(HIST) == (3, 1, [0, 5, 1])
    only_zero = Histogram(field="x", unit="v", scale="log2", buckets=[Bucket(0, 1, 4)])
    assert log2_exponential(only_zero) == (4, 0, [])
    buckets = [Bucket(2, 3, 2), Bucket(16, 31, 4)]
    gaps = Histogram(field="x", unit="v", scale="log2", buckets=buckets)
    assert log2_exponential(gaps) == (0, 1, [2, 0, 0, 4])  # slots between are empty


async def test_results_arrive_as_otel_metrics_bucket_for_bucket(receiver: Receiver) -> None:
    table = CountTable(
        rows=[CountRow({"comm": "dd"}, 7), CountRow({"comm": "sh"}, 2)],
        others=4,
        key_fields=["comm"],
        wall_start=datetime.fromtimestamp(1_800_000_000.0, timezone.utc),
        wall_end=datetime.fromtimestamp(1_800_000_010.0, timezone.utc),
        hosts=["web1"],
    )
    rate = WindowResult(aggregate="count", value=12, window_start=5.0, window_end=6.0)
    running = WindowResult(aggregate="sum", value=30, window_start=5.0)  # no end: cumulative
    items: list[Any] = [HIST, table, rate, running, "an event, not a metric"]
    run = Run(Pipeline(ListSource(items, name="disk"), [], OtlpSink(receiver.endpoint)))
    started = time.time_ns()
    stats = await run.run()
    assert run.sink.delivered == 4  # type: ignore[attr-defined]
    assert stats.stage("otlp").dropped == {"not_a_metric": 1}
    assert receiver.paths == ["/v1/metrics"]
    (request,) = receiver.requests
    resources = {
        next(a.value.string_value for a in r.resource.attributes if a.key == "host.name"): r
        for r in request.resource_metrics
    }
    assert set(resources) == {"web1", socket.gethostname()}
    for resource in request.resource_metrics:  # no schema is claimed
        assert resource.schema_url == ""
        assert [(s.schema_url, s.scope.name) for s in resource.scope_metrics] == [("", "flowtrace")]
    web1 = resources["web1"]
    attrs = {a.key: a.value.string_value for a in web1.resource.attributes}
    assert (attrs["service.name"], attrs["flowtrace.pipeline"]) == ("flowtrace", "disk")
    hist_metric, table_metric = web1.scope_metrics[0].metrics
    assert (hist_metric.name, hist_metric.unit) == ("flowtrace.lat_ns", "usecs")
    (point,) = hist_metric.exponential_histogram.data_points
    assert (point.scale, point.count, point.zero_count) == (0, 9, 3)
    assert (point.positive.offset, list(point.positive.bucket_counts)) == (1, [0, 5, 1])
    assert not point.HasField("sum")
    assert {a.key: a.value.string_value for a in point.attributes} == {"disk": "vda"}
    assert (point.start_time_unix_nano, point.time_unix_nano) == (
        1_800_000_000 * 10**9,
        1_800_000_010 * 10**9,
    )
    assert hist_metric.exponential_histogram.aggregation_temporality == 1  # delta
    assert table_metric.name == "flowtrace.comm.count"
    assert table_metric.sum.is_monotonic
    rows = [
        ({a.key: (a.value.string_value or a.value.bool_value) for a in p.attributes}, p.as_int)
        for p in table_metric.sum.data_points
    ]
    assert rows == [({"comm": "dd"}, 7), ({"comm": "sh"}, 2), ({"flowtrace.others": True}, 4)]
    local, total = resources[socket.gethostname()].scope_metrics[0].metrics
    assert (local.name, local.gauge.data_points[0].as_int) == ("flowtrace.count", 12)
    (point,) = total.gauge.data_points
    assert (total.name, point.as_int) == ("flowtrace.sum", 30)
    assert started <= point.time_unix_nano <= time.time_ns()  # no window end: the export's time


async def test_a_refused_export_is_counted(receiver: Receiver) -> None:
    refusing = Receiver(status=400)
    try:
        run = Run(Pipeline(ListSource([HIST, HIST]), [], OtlpSink(refusing.endpoint)))
        stats = await run.run()
    finally:
        refusing.close()
    assert run.sink.delivered == 0  # type: ignore[attr-defined]
    assert stats.stage("otlp").dropped == {"export_failed": 2}
    assert len(refusing.requests) == 1


def test_spec_errors_name_the_form() -> None:
    with pytest.raises(SinkSpecError, match="use http://HOST:4318/v1/metrics"):
        OtlpSink.from_spec("127.0.0.1:4318")
    sink = OtlpSink.from_spec("http://collector:4318/v1/metrics,timeout=2")
    assert (sink.endpoint, sink.timeout) == ("http://collector:4318/v1/metrics", 2.0)


def test_defaults_are_the_documented_ones() -> None:
    for sink in (OtlpSink(), OtlpSink.from_spec("")):
        assert vars(sink) == {
            "endpoint": "http://127.0.0.1:4318/v1/metrics",
            "timeout": 10.0,
            "pipeline": None,
            "name": "otlp",
        }
    assert OtlpSink.from_spec(",pipeline=disk").pipeline == "disk"
    assert OtlpSink("https://c:4318/v1/metrics").endpoint == "https://c:4318/v1/metrics"
    with pytest.raises(ValueError, match=r"^timeout 0\.0: need a positive number of seconds$"):
        OtlpSink(timeout=0.0)
    with pytest.raises(ValueError, match=r"^timeout inf: need a positive number of seconds$"):
        OtlpSink(timeout=math.inf)
