"""The flowtrace record schema shared by the NDJSON file, socket and recording
formats (schema version 1, documented in ``docs/sinks.md``).

Every record is one object with the same envelope::

    {"v": 1, "type": "event", "name": "SyncCall", "data": {"ts": 1, "pid": 2, "comm": "sync"}}

* ``v``: the schema version (:data:`SCHEMA_VERSION`); a reader rejects others.
* ``type``: what the record is: the ``kind`` ClassVar of the msgspec Struct
  it carries (``event``, ``histogram``, ``count_table``, ``window``, ...), or
  one of the report types below; ``value`` for anything that is not a Struct.
* ``name``: the Python class of ``data`` (``SyncCall``, ``Histogram``).
* ``at``: only in recordings: the pipeline clock (seconds) when the source
  handed the event's batch on.
* ``data``: the payload, structured as the Struct is (histogram buckets stay
  a list of ``{"low", "high", "count"}``, keys stay objects).

A recording (``flowtrace run --record``) is a ``recording`` header, then the
source's ``event`` records with ``at``, then an ``end`` record.

Report records come from the pipeline's counters: ``attach`` (how a probe
attached), ``loss`` (the totals of lost and dropped events grew) and
``summary`` (every stage's final counters, written once at close).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from flowtrace.stats import PipelineStats, StageStats

__all__ = [
    "SCHEMA_VERSION",
    "AttachReport",
    "Envelope",
    "LossReport",
    "RecordEncoder",
    "RecordingEnd",
    "RecordingHeader",
    "StageCounts",
    "Summary",
    "envelope",
    "loss_report",
    "summary",
]

SCHEMA_VERSION = 1


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One record as written. Transient: built and encoded at once, never
    stored, so it cannot be part of a reference cycle (hence ``gc=False``)."""

    v: int
    type: str
    name: str | None = None
    at: float | None = None
    data: Any


class StageCounts(msgspec.Struct, frozen=True, omit_defaults=True):
    """One stage's counters (see :class:`flowtrace.stats.StageStats`);
    ``late`` is left out when 0."""

    name: str
    received: int
    emitted: int
    lost: int
    dropped: dict[str, int]
    late: int = 0


class AttachReport(msgspec.Struct, frozen=True):
    """A line the pipeline reported while starting (how a probe attached)."""

    kind: ClassVar[str] = "attach"
    message: str


class LossReport(msgspec.Struct, frozen=True):
    """Totals of events lost in the kernel and dropped in the pipeline so far,
    with the stages that lost or dropped any."""

    kind: ClassVar[str] = "loss"
    lost: int
    dropped: int
    stages: list[StageCounts]


class Summary(msgspec.Struct, frozen=True):
    """Every stage's counters when the writing sink closed."""

    kind: ClassVar[str] = "summary"
    lost: int
    dropped: int
    stages: list[StageCounts]


class RecordingHeader(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """First line of a recording: which source and event type, and the field
    layout (name, C type) the events had, so a replay can check they match.
    A source emitting several event types lists each (name, fields) in
    ``events``, and ``event`` and ``fields`` are null."""

    kind: ClassVar[str] = "recording"
    source: str
    event: str | None
    fields: list[tuple[str, str]] | None
    clock: str
    start: float
    events: list[tuple[str, list[tuple[str, str]]]] | None = None
    wall_start: float | None = None
    """Unix seconds when the clock read ``start`` (absent in recordings made
    before it was added): a replay maps its clock onto wall-clock time from
    it, so results it ships carry the recorded wall-clock windows."""


Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A number of events: what a recording's end record may claim."""


class RecordingEnd(msgspec.Struct, frozen=True, kw_only=True):
    """Last line of a recording: how many events it holds, and what the source
    counted (read from its origin, lost before delivery) when it stopped."""

    kind: ClassVar[str] = "end"
    events: Count
    received: Count
    lost: Count


def _counts(stage: StageStats) -> StageCounts:
    return StageCounts(
        stage.name, stage.received, stage.emitted, stage.lost, dict(stage.dropped), stage.late
    )


def loss_report(stats: PipelineStats) -> LossReport:
    """The loss record for the counters as they are now."""
    stages = [_counts(s) for s in list(stats.stages) if s.lost or s.dropped]
    return LossReport(stats.lost, stats.dropped, stages)


def summary(stats: PipelineStats) -> Summary:
    """The summary record for the counters as they are now."""
    return Summary(stats.lost, stats.dropped, [_counts(s) for s in list(stats.stages)])


def envelope(item: Any, at: float | None = None) -> Envelope:
    """Wrap ``item`` in the record envelope, typed by its ``kind`` ClassVar."""
    cls = type(item)
    if isinstance(item, msgspec.Struct):
        kind = getattr(cls, "kind", "value")
        return Envelope(v=SCHEMA_VERSION, type=kind, name=cls.__name__, at=at, data=item)
    return Envelope(v=SCHEMA_VERSION, type="value", name=cls.__name__, at=at, data=item)


class RecordEncoder:
    """Encodes records as JSON lines or msgpack, with one reused msgspec encoder
    of each kind. Raises ``TypeError`` naming the value msgspec cannot encode."""

    def __init__(self) -> None:
        self._json = msgspec.json.Encoder()
        self._msgpack = msgspec.msgpack.Encoder()

    def json_lines(self, items: list[Any], at: float | None = None) -> bytes:
        """``items`` as newline-terminated JSON records, in order."""
        return self._json.encode_lines([envelope(i, at) for i in items])

    def json_line(self, item: Any, at: float | None = None) -> bytes:
        """One newline-terminated JSON record."""
        return self._json.encode(envelope(item, at)) + b"\n"

    def msgpack(self, item: Any) -> bytes:
        """One record as msgpack (no framing)."""
        return self._msgpack.encode(envelope(item))
