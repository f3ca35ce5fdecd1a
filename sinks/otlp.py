"""Exporting results as OpenTelemetry metrics over OTLP/HTTP.

The records become the OpenTelemetry SDK's own metric data, sent by its
OTLP/HTTP exporter (protobuf encoding, retries): no protobuf written here.
"""

from __future__ import annotations

import math
import socket
import time
from datetime import datetime
from typing import Any, cast

import anyio.to_thread
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from flowtrace.context import StageContext
from flowtrace.records import CountTable, Histogram, Result, WindowResult
from flowtrace.sinkspec import SinkSpecError, parse_options, parse_seconds
from flowtrace.stages import Sink

__all__ = ["OtlpSink", "log2_exponential"]

_SCOPE = InstrumentationScope("flowtrace")


def log2_exponential(histogram: Histogram) -> tuple[int, int, list[int]]:
    """``(zero_count, offset, bucket_counts)`` of a log2 histogram as an
    OpenTelemetry exponential histogram at scale 0 (base 2).

    bcc's slot ``s >= 2`` holds ``2**(s-1) .. 2**s - 1``; it becomes bucket
    index ``s - 1``, whose bounds at scale 0 are the same powers of two,
    ``(2**(s-1), 2**s]`` (OpenTelemetry buckets include their upper bound,
    bcc's their lower one: the bounds coincide, only a value exactly on a
    power of two is read in the bucket above). bcc's first row, slot 1
    (``0 -> 1``), counts 0 and 1 together and cannot be split: it becomes
    the zero bucket (``zero_count``, zero threshold 0), so those values
    read as 0.
    """
    zero = 0
    counts: dict[int, int] = {}
    for bucket in histogram.buckets:
        if bucket.high <= 1:
            zero += bucket.count
        else:
            counts[bucket.high.bit_length() - 1] = bucket.count
    if not counts:
        return zero, 0, []
    offset = min(counts)
    return zero, offset, [counts.get(i, 0) for i in range(offset, max(counts) + 1)]


def _ns(when: datetime) -> int:
    return _ns_of(when.timestamp())


def _ns_of(seconds: float) -> int:
    return round(seconds * 1e9)


class OtlpSink(Sink[Any]):
    """Sends results to an OTLP/HTTP metrics endpoint (an OpenTelemetry
    Collector's ``http://HOST:4318/v1/metrics``) with the OpenTelemetry SDK's
    exporter, one export request per batch.

    * log2 histograms: exponential histograms at scale 0, named
      ``flowtrace.<field>`` with the record's unit (see
      :func:`log2_exponential` for the bucket mapping and the zero bucket);
      sum, min and max are not set (bcc's buckets do not know them);
    * count tables: a monotonic sum ``flowtrace.<key fields>.count`` with one
      data point per row, the row's key as attributes (``others``: a point
      with ``flowtrace.others=true``);
    * window results with a number value (count, sum, min, max, rate): a
      gauge ``flowtrace.<aggregate>[.<field>]``.

    A result's key becomes attributes. Windowed results are delta points
    over their window (wall-clock bounds when the result has them, else the
    run's clock mapped to wall time); results of the whole run are
    cumulative from the sink's start. Resource attributes: ``host.name``
    (the result's host when it came from one, else this host),
    ``service.name`` ``flowtrace`` and ``flowtrace.pipeline`` (the run's
    source name, or ``pipeline``).

    Accounting: a record counts as delivered (:attr:`delivered`) once its
    request succeeded (the exporter retries what the receiver may take
    later, for up to ``timeout`` seconds); records of a failed request are
    ``dropped["export_failed"]``; records that are no metric (events,
    linear histograms, join pairs) ``dropped["not_a_metric"]``. Exports run
    in a worker thread, never on the event loop.
    """

    def __init__(
        self,
        endpoint: str = "http://127.0.0.1:4318/v1/metrics",
        *,
        timeout: float = 10.0,
        pipeline: str | None = None,
        name: str = "otlp",
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"bad OTLP endpoint {endpoint!r}: use http://HOST:4318/v1/metrics")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout {timeout!r}: need a positive number of seconds")
        self.endpoint = endpoint
        self.timeout = timeout
        self.pipeline = pipeline
        self.name = name

    @classmethod
    def from_spec(cls, argument: str) -> OtlpSink:
        """``[http://HOST:PORT/v1/metrics][,timeout=S][,pipeline=NAME]``."""
        endpoint, *rest = argument.split(",") if argument else [""]
        options = parse_options(rest, {"timeout": parse_seconds, "pipeline": str})
        try:
            return cls(endpoint or "http://127.0.0.1:4318/v1/metrics", **options)
        except ValueError as exc:
            raise SinkSpecError(str(exc)) from None

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.delivered = 0
        """Records the receiver accepted."""
        self._exporter = OTLPMetricExporter(endpoint=self.endpoint, timeout=self.timeout)
        self._started = time.time()
        chain = ctx.pipeline.chain
        self._pipeline = self.pipeline or (chain[0].name if chain else "pipeline")
        self._host = socket.gethostname()

    async def write(self, batch: list[Any]) -> None:
        by_host: dict[str, list[Metric]] = {}
        sent = 0
        for item in batch:
            metric = self._metric(item)
            if metric is None:
                self.ctx.stats.drop("not_a_metric", 1)
                continue
            host = ",".join(item.hosts) if item.hosts else self._host
            by_host.setdefault(host, []).append(metric)
            sent += 1
        if not sent:
            return
        data = MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=Resource.create(
                        {
                            "host.name": host,
                            "service.name": "flowtrace",
                            "flowtrace.pipeline": self._pipeline,
                        }
                    ),
                    scope_metrics=[ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")],
                    schema_url="",
                )
                for host, metrics in by_host.items()
            ]
        )
        result = await anyio.to_thread.run_sync(self._exporter.export, data)
        if result is MetricExportResult.SUCCESS:
            self.delivered += sent
        else:
            self.ctx.stats.drop("export_failed", sent)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._exporter.shutdown)

    def _times(self, item: Result) -> tuple[int, int, AggregationTemporality]:
        if item.wall_start is not None and item.wall_end is not None:
            return _ns(item.wall_start), _ns(item.wall_end), AggregationTemporality.DELTA
        if item.window_start is not None and item.window_end is not None:
            offset = time.time() - self.ctx.clock.now()
            start, end = item.window_start + offset, item.window_end + offset
            return _ns_of(start), _ns_of(end), AggregationTemporality.DELTA
        return _ns_of(self._started), _ns_of(time.time()), AggregationTemporality.CUMULATIVE

    def _metric(self, item: Any) -> Metric | None:
        if isinstance(item, Histogram) and item.scale == "log2":
            return self._histogram(item)
        if isinstance(item, CountTable):
            return self._table(item)
        if isinstance(item, WindowResult) and isinstance(item.value, int | float):
            start, end, _ = self._times(item)
            point = NumberDataPoint(
                attributes=dict(item.key or {}),
                start_time_unix_nano=start,
                time_unix_nano=end,
                value=item.value,
            )
            name = f"flowtrace.{item.aggregate}" + (f".{item.field}" if item.field else "")
            return Metric(name=name, description=None, unit=None, data=Gauge([point]))
        return None

    def _histogram(self, item: Histogram) -> Metric:
        start, end, temporality = self._times(item)
        zero, offset, counts = log2_exponential(item)
        unset = cast(float, None)  # proto3 optional: not set
        point = ExponentialHistogramDataPoint(
            attributes=dict(item.key or {}),
            start_time_unix_nano=start,
            time_unix_nano=end,
            count=item.total,
            sum=unset,
            scale=0,
            zero_count=zero,
            positive=Buckets(offset=offset, bucket_counts=counts),
            negative=Buckets(offset=0, bucket_counts=[]),
            flags=0,
            min=unset,
            max=unset,
        )
        data = ExponentialHistogram(data_points=[point], aggregation_temporality=temporality)
        return Metric(name=f"flowtrace.{item.field}", description=None, unit=item.unit, data=data)

    def _table(self, item: CountTable) -> Metric:
        start, end, temporality = self._times(item)
        points = [
            NumberDataPoint(
                attributes={k: _attribute(v) for k, v in row.key.items()},
                start_time_unix_nano=start,
                time_unix_nano=end,
                value=row.count,
            )
            for row in item.rows
        ]
        if item.others:
            points.append(
                NumberDataPoint(
                    attributes={"flowtrace.others": True},
                    start_time_unix_nano=start,
                    time_unix_nano=end,
                    value=item.others,
                )
            )
        name = "flowtrace." + "_".join(item.key_fields or ["key"]) + ".count"
        data = Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True)
        return Metric(name=name, description=None, unit=None, data=data)


def _attribute(value: Any) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
