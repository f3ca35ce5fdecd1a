"""A Prometheus endpoint for a pipeline's results and its own counters."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from flowtrace.sinkspec import SinkSpecError, parse_options
from flowtrace.stages import Sink

__all__ = ["BASE_UNITS", "MetricsSink", "metric_name"]

Labels = tuple[tuple[str, str], ...]

BASE_UNITS: dict[str, tuple[str, float, float]] = {
    "nsecs": ("seconds", 1.0, 1e9),
    "ns": ("seconds", 1.0, 1e9),
    "usecs": ("seconds", 1.0, 1e6),
    "us": ("seconds", 1.0, 1e6),
    "msecs": ("seconds", 1.0, 1e3),
    "ms": ("seconds", 1.0, 1e3),
    "secs": ("seconds", 1.0, 1.0),
    "seconds": ("seconds", 1.0, 1.0),
    "bytes": ("bytes", 1.0, 1.0),
    "kbytes": ("bytes", 1024.0, 1.0),
    "mbytes": ("bytes", 1024.0**2, 1.0),
    "gbytes": ("bytes", 1024.0**3, 1.0),
}
"""A histogram's unit (bcc's ``val_type``) -> the Prometheus base unit, and
what a value is multiplied, then divided by to be in it (dividing keeps
``3 / 1e6`` exactly ``3e-06``); other units are kept as they are."""

_UNIT_WORDS = {*BASE_UNITS, "sec", "s", "usec", "msec", "nsec", "kb", "mb", "b", "value"}
_RESERVED = {"pipeline", "le", "stage", "reason", "type", "name", "metric", "quantile"}
OTHER = "other"


def _name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


def _label(field_name: str) -> str:
    name = _name(field_name).lstrip("_") or "key"
    return f"key_{name}" if name in _RESERVED or name[0].isdigit() else name


def metric_name(prefix: str, field_name: str, unit: str) -> tuple[str, tuple[float, float]]:
    """The metric name of a histogram of ``field_name`` in ``unit``, and
    what converts ``unit`` to the base unit the name ends with (multiply,
    then divide): unit words at the end of the field are left out so the
    unit is said once (``lat_ns`` in usecs -> ``<prefix>_lat_seconds``,
    ``bytes`` in kbytes -> ``<prefix>_bytes``)."""
    base, mul, div = BASE_UNITS.get(unit, (_name(unit) if unit != "value" else "", 1.0, 1.0))
    words = [w for w in _name(field_name).lower().split("_") if w]
    while words and (words[-1] in _UNIT_WORDS or words[-1] == base):
        words.pop()
    if not words and not base:
        words = ["value"]
    parts = [_name(prefix), *words, *([base] if base else [])]
    return "_".join(p for p in parts if p), (mul, div)


@dataclass
class _Series:
    """The label sets of one metric, bounded: past ``limit`` distinct sets a
    new one is folded into the ``other`` set and counted."""

    limit: int
    known: set[Labels] = field(default_factory=set)
    folded: int = 0

    def admit(self, labels: Labels) -> Labels:
        if labels in self.known or not labels:
            return labels
        if len(self.known) < self.limit:
            self.known.add(labels)
            return labels
        self.folded += 1
        return tuple((k, OTHER) for k, _ in labels)


@dataclass
class _Histogram:
    """One series of a histogram metric: bucket counts by ``le`` in the
    records' unit, the sum (None once a record did not know it), and the
    conversion to the base unit."""

    scale: tuple[float, float]
    counts: dict[int, int] = field(default_factory=dict)
    sum: float | None = 0.0

    def base(self, value: float) -> float:
        mul, div = self.scale
        return value * mul / div


def _is_other(labels: Labels) -> bool:
    return bool(labels) and all(v == OTHER for _, v in labels)


class MetricsSink(Sink[Any]):
    """Serves ``http://HOST:PORT/metrics`` in the Prometheus text format while
    the pipeline runs (from ``open`` to ``close``), on 127.0.0.1 unless
    ``host`` says otherwise; ``port=0`` picks a free port (see :attr:`port`).

    Every series has a ``pipeline`` label (``pipeline``, default: the run's
    pipeline name, e.g. the lesson's file name). What it exposes
    (``prefix`` defaults to ``flowtrace``):

    * Each :class:`~flowtrace.records.Histogram` as a Prometheus histogram
      in base units (seconds, bytes; see :data:`BASE_UNITS`), named ``name``
      when given, else after its field and unit without saying the unit
      twice (:func:`metric_name`: ``lat_ns`` in usecs ->
      ``flowtrace_lat_seconds``), labelled by its key. A bucket ``[low,
      high]`` of integer values becomes ``le = (high + 1) * factor``, so log2
      buckets (``0 -> 1``, ``2 -> 3``, ``4 -> 7``, ...) get the power-of-two
      bounds 2, 4, 8, ... (times the factor: microseconds are 2e-06 s ...).
      ``_sum`` is the histogram's sum in base units (left out when a record
      does not know it), ``_count`` its count. Histograms of a window are
      added up, so the buckets are counters over the whole run; a histogram
      without window bounds is a running total and replaces what was there.
    * :class:`~flowtrace.records.CountTable` rows as a counter named
      ``name`` (``<name>_total``) or ``<prefix>_events_by_<key fields>_total``,
      labelled by key (added up per window, replaced otherwise); rows a top-N
      limit cut are counted in the ``other`` series.
    * ``<prefix>_window_<aggregate>``: the latest numeric
      :class:`~flowtrace.records.WindowResult` per key, as a gauge.
    * ``<prefix>_records_total``: every record received, by ``type`` and ``name``.
    * ``<prefix>_stage_received_total``, ``_stage_emitted_total``,
      ``_stage_dropped_total`` (by ``reason``) and ``_stage_lost_total``
      (lost in the kernel before delivery), per ``stage``: the whole
      run's counters (every stage of the pipeline).

    Cardinality is bounded: each metric keeps at most ``max_series`` label
    sets (keys); results for further keys are folded into one series whose
    key labels are all ``other``, and each record or row folded is counted
    in ``<prefix>_series_folded_total{metric=...}``. Key fields named like
    the sink's own labels (``pipeline``, ``le``, ...), or starting with a
    digit, become ``key_<name>``.

    Holds one counter per label set (at most ``max_series + 1`` per metric),
    no events. The HTTP server runs in a thread (prometheus-client's); the
    state it reads is guarded by a lock, and ``close`` stops it before
    returning.
    """

    name = "metrics"

    def __init__(
        self,
        port: int = 9464,
        host: str = "127.0.0.1",
        *,
        name: str | None = None,
        help: str | None = None,
        prefix: str = "flowtrace",
        pipeline: str | None = None,
        max_series: int = 100,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not between 0 and 65535")
        if max_series < 1:
            raise ValueError(f"max_series {max_series} must be at least 1")
        self.host, self.port, self.prefix = host, port, _name(prefix)
        self.metric = None if name is None else _name(name).removesuffix("_total")
        self.help = help
        self.pipeline = pipeline
        self.max_series = max_series

    @classmethod
    def from_spec(cls, argument: str) -> MetricsSink:
        """``[HOST:]PORT[,max_series=N][,name=METRIC]`` (IPv6 hosts in
        brackets); empty: 127.0.0.1:9464."""
        address, *rest = argument.split(",")
        options = parse_options(rest, {"max_series": int, "name": str})
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if port and not port.isdigit():
            raise SinkSpecError(f"bad port {port!r}: use --sink metrics:PORT or metrics:HOST:PORT")
        return cls(int(port) if port else 9464, host, **options)

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
        self._pipeline = self.pipeline if self.pipeline is not None else ctx.pipeline.name
        self._lock = threading.Lock()
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._counts: dict[str, dict[Labels, int]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._records: dict[tuple[str, str], int] = {}
        self._series: dict[str, _Series] = {}
        self._help: dict[str, str] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
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

    def _admit(self, metric: str, key: dict[str, Any] | None) -> Labels:
        labels = tuple(sorted((_label(k), str(v)) for k, v in (key or {}).items()))
        series = self._series.setdefault(metric, _Series(self.max_series))
        return series.admit(labels)

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
                    metric = f"{self.prefix}_window_{_name(item.aggregate)}"
                    self._help.setdefault(metric, f"latest window {item.aggregate}")
                    labels = self._admit(metric, item.key)
                    self._gauges.setdefault(metric, {})[labels] = float(item.value)

    def _histogram(self, record: Histogram) -> None:
        derived, scale = metric_name(self.prefix, record.field, record.unit)
        metric = self.metric or derived
        base = metric.rsplit("_", 1)[-1] if metric != self.prefix else ""
        self._help.setdefault(
            metric,
            self.help
            or f"{record.scale} histogram of {record.field} ({record.unit} buckets)"
            + (f", in {base}" if record.unit in BASE_UNITS else ""),
        )
        family = self._histograms.setdefault(metric, {})
        labels = self._admit(metric, record.key)
        held = family.get(labels)
        if held is None or (record.window_end is None and not _is_other(labels)):
            held = family[labels] = _Histogram(scale)  # new, or a running total replacing
        for bucket in record.buckets:
            held.counts[bucket.high + 1] = held.counts.get(bucket.high + 1, 0) + bucket.count
        if held.sum is not None:
            held.sum = None if record.sum is None else held.sum + record.sum

    def _count_table(self, table: CountTable) -> None:
        key_fields = table.key_fields or sorted({k for row in table.rows for k in row.key})
        fields = "_".join(_name(f).lower() for f in key_fields) or "key"
        metric = self.metric or f"{self.prefix}_events_by_{fields}"
        by = f" by {', '.join(key_fields)}" if key_fields else ""
        self._help.setdefault(metric, self.help or f"events counted{by}")
        if table.window_end is None:
            self._counts[metric] = {}
        counts = self._counts.setdefault(metric, {})
        for row in table.rows:
            labels = self._admit(metric, row.key)
            counts[labels] = counts.get(labels, 0) + row.count
        if table.others:
            other = tuple(sorted((_label(f), OTHER) for f in key_fields))
            counts[other] = counts.get(other, 0) + table.others

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
        p, pipeline = self.prefix, self._pipeline
        received = CounterMetricFamily(
            f"{p}_stage_received", "events a stage took in", labels=["pipeline", "stage"]
        )
        emitted = CounterMetricFamily(
            f"{p}_stage_emitted", "events a stage passed on", labels=["pipeline", "stage"]
        )
        lost = CounterMetricFamily(
            f"{p}_stage_lost",
            "events lost before delivery (kernel buffer full)",
            labels=["pipeline", "stage"],
        )
        dropped = CounterMetricFamily(
            f"{p}_stage_dropped",
            "events a stage dropped, by reason",
            labels=["pipeline", "stage", "reason"],
        )
        for s in stages:
            received.add_metric([pipeline, s.name], s.received)
            emitted.add_metric([pipeline, s.name], s.emitted)
            lost.add_metric([pipeline, s.name], s.lost)
            for reason, count in dict(s.dropped).items():
                dropped.add_metric([pipeline, s.name, reason], count)
        yield from (received, emitted, lost, dropped)

    def _result_metrics(self) -> Iterator[Metric]:
        p, pipeline = self.prefix, self._pipeline
        records = CounterMetricFamily(
            f"{p}_records", "records received", labels=["pipeline", "type", "name"]
        )
        for (kind, name), count in self._records.items():
            records.add_metric([pipeline, kind, name], count)
        yield records
        for metric, members in self._histograms.items():
            names = _label_names(members)
            family = HistogramMetricFamily(metric, self._help[metric], labels=names)
            for labels, held in members.items():
                values = _values(names, labels, pipeline)
                total = None if held.sum is None else held.base(held.sum)
                family.add_metric(values, _cumulative(held), total)
                if total is None:  # _count only: buckets say that
                    count_labels = dict(zip(names, values, strict=True))
                    family.add_sample(
                        f"{metric}_count", count_labels, float(sum(held.counts.values()))
                    )
            yield family
        for metric, counts in self._counts.items():
            names = _label_names(counts)
            table = CounterMetricFamily(metric, self._help[metric], labels=names)
            for labels, count in counts.items():
                table.add_metric(_values(names, labels, pipeline), count)
            yield table
        for metric, latest in self._gauges.items():
            names = _label_names(latest)
            gauge = GaugeMetricFamily(metric, self._help[metric], labels=names)
            for labels, value in latest.items():
                gauge.add_metric(_values(names, labels, pipeline), value)
            yield gauge
        folded = CounterMetricFamily(
            f"{p}_series_folded",
            "results of keys past max_series, folded into the 'other' series",
            labels=["pipeline", "metric"],
        )
        for metric, series in self._series.items():
            folded.add_metric([pipeline, metric], series.folded)
        yield folded


def _label_names(members: dict[Labels, Any]) -> list[str]:
    return ["pipeline", *sorted({k for labels in members for k, _ in labels})]


def _values(names: list[str], labels: Labels, pipeline: str) -> list[str]:
    given = dict(labels)
    return [pipeline, *(given.get(n, "") for n in names[1:])]


def _cumulative(held: _Histogram) -> list[tuple[str, float]]:
    buckets, total = [], 0
    for bound in sorted(held.counts):
        total += held.counts[bound]
        buckets.append((repr(held.base(float(bound))), float(total)))
    return [*buckets, ("+Inf", float(total))]


class _Collector(Collector):
    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        return self.sink.metrics()
