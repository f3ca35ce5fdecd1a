"""A Prometheus endpoint for a pipeline's results and its own counters."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from flowtrace.context import StageContext
from flowtrace.records import CountTable, Histogram, WindowResult
from flowtrace.sinkspec import SinkSpecError
from flowtrace.stages import Sink

__all__ = ["MetricsSink"]

Labels = tuple[tuple[str, str], ...]


def _name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


def _labels(key: dict[str, Any] | None) -> Labels:
    return tuple(sorted((_name(k), str(v)) for k, v in (key or {}).items()))


class MetricsSink(Sink[Any]):
    """Serves ``http://HOST:PORT/metrics`` in the Prometheus text format while
    the pipeline runs (from ``open`` to ``close``), on 127.0.0.1 unless
    ``host`` says otherwise; ``port=0`` picks a free port (see :attr:`port`).

    What it exposes (``prefix`` defaults to ``flowtrace``):

    * ``<prefix>_<field>_<unit>``: each :class:`~flowtrace.records.Histogram`
      as a Prometheus histogram, labelled by its key. A bucket ``[low, high]``
      of integer values becomes ``le = high + 1``, so log2 buckets (``0 -> 1``,
      ``2 -> 3``, ``4 -> 7``, ...) get the power-of-two bounds 2, 4, 8, ...
      (``le`` counts values below it, all integers up to ``high``).
      Histograms of a window are added up, so the buckets are counters over
      the whole run; a histogram without window bounds is a running total and
      replaces what was there. There is no ``_sum``: buckets do not say it.
    * ``<prefix>_key_count_total``: :class:`~flowtrace.records.CountTable` rows
      by key (added up per window, replaced otherwise), and
      ``<prefix>_key_count_others_total`` for rows cut by a top-N limit.
    * ``<prefix>_window_<aggregate>``: the latest numeric
      :class:`~flowtrace.records.WindowResult` per key, as a gauge.
    * ``<prefix>_records_total``: every record received, by ``type`` and ``name``.
    * ``<prefix>_stage_received_total``, ``_stage_emitted_total``,
      ``_stage_dropped_total`` (by ``reason``) and ``_stage_lost_total``
      (lost in the kernel before delivery), per ``stage``: the whole
      run's counters (every stage of the pipeline).

    Holds one counter per label set, no events. The HTTP server runs in a
    thread (prometheus-client's); the state it reads is guarded by a lock,
    and ``close`` stops it before returning.
    """

    def __init__(
        self,
        port: int = 9464,
        host: str = "127.0.0.1",
        *,
        prefix: str = "flowtrace",
        name: str = "metrics",
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not between 0 and 65535")
        self.host, self.port, self.prefix, self.name = host, port, _name(prefix), name

    @classmethod
    def from_spec(cls, argument: str) -> MetricsSink:
        """``[HOST:]PORT`` (IPv6 hosts in brackets); empty: 127.0.0.1:9464."""
        host, _, port = argument.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port:
            return cls(host=host)
        if not port.isdigit():
            raise SinkSpecError(f"bad port {port!r}: use --sink metrics:PORT or metrics:HOST:PORT")
        return cls(int(port), host)

    def reports_pipeline(self) -> bool:
        return True

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def open(self, ctx: StageContext) -> None:
        """Start this run's registry and HTTP server (``port`` 0: any free
        port; the run's copy then holds the one chosen)."""
        await super().open(ctx)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._lock = threading.Lock()
        self._histograms: dict[tuple[str, str, Labels], dict[int, int]] = {}
        self._counts: dict[Labels, int] = {}
        self._others = 0
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._records: dict[tuple[str, str], int] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        try:
            self._server, self._thread = start_http_server(self.port, self.host, self.registry)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror};"
                " choose another port with --sink metrics:HOST:PORT",
            ) from None
        self.port = self._server.server_port
        ctx.report(f"serving metrics at {self.url}")

    async def write(self, batch: list[Any]) -> None:
        with self._lock:
            for item in batch:
                cls = type(item)
                kind = (getattr(cls, "kind", "value"), cls.__name__)
                self._records[kind] = self._records.get(kind, 0) + 1
                if isinstance(item, Histogram):
                    self._histogram(item)
                elif isinstance(item, CountTable):
                    self._count_table(item)
                elif isinstance(item, WindowResult) and isinstance(item.value, int | float):
                    name = f"{self.prefix}_window_{_name(item.aggregate)}"
                    self._gauges[name, _labels(item.key)] = float(item.value)

    def _histogram(self, record: Histogram) -> None:
        name = f"{self.prefix}_{_name(record.field)}_{_name(record.unit)}"
        slot = (name, record.field, _labels(record.key))
        counts = self._histograms.get(slot, {}) if record.window_end is not None else {}
        for bucket in record.buckets:
            counts[bucket.high + 1] = counts.get(bucket.high + 1, 0) + bucket.count
        self._histograms[slot] = counts

    def _count_table(self, table: CountTable) -> None:
        if table.window_end is None:
            self._counts.clear()
            self._others = 0
        for row in table.rows:
            labels = _labels(row.key)
            self._counts[labels] = self._counts.get(labels, 0) + row.count
        self._others += table.others

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await anyio.to_thread.run_sync(server.shutdown)
            server.server_close()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join)

    def metrics(self) -> Iterator[Metric]:
        """The current metric families (what a scrape returns)."""
        with self._lock:
            yield from self._result_metrics()
        stages = list(self.ctx.pipeline.stages)
        p = self.prefix
        received = CounterMetricFamily(
            f"{p}_stage_received", "events a stage took in", labels=["stage"]
        )
        emitted = CounterMetricFamily(
            f"{p}_stage_emitted", "events a stage passed on", labels=["stage"]
        )
        lost = CounterMetricFamily(
            f"{p}_stage_lost", "events lost before delivery (kernel buffer full)", labels=["stage"]
        )
        dropped = CounterMetricFamily(
            f"{p}_stage_dropped", "events a stage dropped, by reason", labels=["stage", "reason"]
        )
        for s in stages:
            received.add_metric([s.name], s.received)
            emitted.add_metric([s.name], s.emitted)
            lost.add_metric([s.name], s.lost)
            for reason, count in dict(s.dropped).items():
                dropped.add_metric([s.name, reason], count)
        yield from (received, emitted, lost, dropped)

    def _result_metrics(self) -> Iterator[Metric]:
        p = self.prefix
        records = CounterMetricFamily(f"{p}_records", "records received", labels=["type", "name"])
        for (kind, name), count in self._records.items():
            records.add_metric([kind, name], count)
        yield records
        families: dict[str, list[tuple[Labels, dict[int, int], str]]] = {}
        for (name, field, labels), counts in self._histograms.items():
            families.setdefault(name, []).append((labels, counts, field))
        for name, members in families.items():
            label_names = sorted({k for labels, _, _ in members for k, _ in labels})
            family = HistogramMetricFamily(
                name, f"histogram of {members[0][2]}", labels=label_names
            )
            for labels, counts, _ in members:
                values = _values(label_names, labels)
                family.add_metric(values, _cumulative(counts), None)
                # no _sum (buckets do not say it), but _count, which they do
                count_labels = dict(zip(label_names, values, strict=True))
                family.add_sample(f"{name}_count", count_labels, float(sum(counts.values())))
            yield family
        if self._counts or self._others:
            names = sorted({k for labels in self._counts for k, _ in labels})
            table = CounterMetricFamily(f"{p}_key_count", "events by key", labels=names)
            for labels, count in self._counts.items():
                table.add_metric(_values(names, labels), count)
            yield table
            yield CounterMetricFamily(
                f"{p}_key_count_others", "events of keys cut by a top-N limit", value=self._others
            )
        gauges: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in self._gauges.items():
            gauges.setdefault(name, []).append((labels, value))
        for name, latest in gauges.items():
            label_names = sorted({k for labels, _ in latest for k, _ in labels})
            gauge = GaugeMetricFamily(name, "latest window value", labels=label_names)
            for labels, value in latest:
                gauge.add_metric(_values(label_names, labels), value)
            yield gauge


def _values(names: list[str], labels: Labels) -> list[str]:
    given = dict(labels)
    return [given.get(n, "") for n in names]


def _cumulative(counts: dict[int, int]) -> list[tuple[str, float]]:
    buckets, total = [], 0
    for bound in sorted(counts):
        total += counts[bound]
        buckets.append((str(float(bound)), float(total)))
    return [*buckets, ("+Inf", float(total))]


class _Collector(Collector):
    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        return self.sink.metrics()
