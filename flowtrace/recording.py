"""Reading a recording (see :mod:`flowtrace.recorder`) as untrusted input.

:class:`RecordingReader` checks every line (size, JSON, schema version,
record type, field names, types and kernel ranges, arrival times that never
go backwards nor lie more than :data:`MAX_SPAN` seconds after the header's
start, the ``end`` record and its count) and raises
:class:`ReplayError` naming the file, the line number, the problem and the
fix. A recording never names code to import: the event type comes from the
caller (the pipeline being replayed) and must match the header's layout; a
source whose event type is generated from the running kernel (a
tracepoint's format file) has it rebuilt from the header's field names and
kernel types instead (:func:`replay_event`), so replaying reads no tracefs.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import msgspec
import numpy as np

from .errors import EventDefinitionError, FlowtraceError
from .events import Event, event_type, layout_of
from .ktypes import parse_c_type
from .recorder import field_types
from .schema import SCHEMA_VERSION, RecordingEnd, RecordingHeader
from .stages import Source

__all__ = [
    "MALFORMED",
    "MAX_FIELDS",
    "MAX_LINE",
    "MAX_SPAN",
    "MAX_TYPES",
    "RecordingReader",
    "ReplayError",
    "malformed",
    "open_recording",
    "replay_event",
]

S = TypeVar("S", bound=msgspec.Struct)

MAX_LINE = 1 << 20
"""Longest line a reader accepts (bytes); flowtrace writes lines of ~100 bytes."""
MAX_SPAN = 366 * 24 * 3600.0
"""Latest arrival time (``at``, the end record's too) a reader accepts, in
seconds after the header's ``start``: a recording covers at most 366 days.
A later time is a forged or corrupt file (replaying it would move the
virtual clock that far)."""
MAX_START = 1e12
"""Largest header ``start`` (in absolute value) a reader accepts: clock
seconds (monotonic: since boot), so ±31,000 years: far inside what the
windows' nanosecond arithmetic handles (a forged 1e300 would overflow it)."""
MAX_WALL_START = 253_402_300_799.0 - MAX_SPAN
"""Latest header ``wall_start`` (Unix seconds) a reader accepts: a year
before the end of 9999, the last time a wall-clock result can carry."""
MAX_FIELDS = 1024
"""Most fields a recorded event type rebuilt from a header may have."""
MAX_TYPES = 64
"""Most event types a header rebuilt for replay may list."""
BATCH_LIMIT = 8192
_FIX = "record it again with flowtrace run --record"
_OTHER = "replay it into the pipeline that recorded it, or record this one"


MALFORMED = (msgspec.DecodeError, RecursionError)
"""What decoding an untrusted line may raise: msgspec gives up on JSON nested
past its depth limit (``[[[[...``) with RecursionError."""


def malformed(exc: Exception) -> str:
    """What is wrong with a line that failed to decode, in a few words."""
    if isinstance(exc, RecursionError):
        return "nested too deeply (a flowtrace record nests a few levels)"
    return str(exc)


class ReplayError(FlowtraceError):
    """A recording is unreadable, malformed, truncated, or for another event type."""


class _Line(msgspec.Struct, kw_only=True):
    v: int
    type: str
    name: str | None = None
    at: float | None = None
    data: msgspec.Raw


_INT64_MAX = (1 << 63) - 1


def _strict_type(event: type[S]) -> tuple[type[msgspec.Struct], list[tuple[int, int]]]:
    """A Struct with ``event``'s fields, each limited to its kernel type's
    range, and the (field index, maximum) checks msgspec cannot do itself
    (bounds past int64: u64 fields). A Struct that is not an Event keeps its
    own field types."""
    if not issubclass(event, Event):
        own = [(f.name, f.type) for f in msgspec.structs.fields(event)]
        return msgspec.defstruct(event.__name__, own, forbid_unknown_fields=True), []
    fields: list[tuple[str, Any]] = []
    extra: list[tuple[int, int]] = []
    for i, f in enumerate(layout_of(event).fields):
        if f.ktype.is_string:
            fields.append((f.name, Annotated[str, msgspec.Meta(max_length=f.ktype.array_len)]))
            continue
        info = np.iinfo(np.dtype(f.ktype.numpy_code))
        high = int(info.max)
        if high > _INT64_MAX:
            extra.append((i, high))
            high = _INT64_MAX
        limits = msgspec.Meta(ge=int(info.min)) if high == _INT64_MAX else None
        limits = limits or msgspec.Meta(ge=int(info.min), le=high)
        fields.append((f.name, Annotated[int, limits]))
    return msgspec.defstruct(event.__name__, fields, forbid_unknown_fields=True), extra


class _RecordingFile:
    """A recording file, read in bounded lines; opening it reads and checks
    its header (``header``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._envelope = msgspec.json.Decoder(_Line)
        self._header_decoder = msgspec.json.Decoder(RecordingHeader)
        with self._open() as lines:
            self.header = self._read_header(lines)

    def _fail(self, lineno: int, problem: str, fix: str = _FIX) -> ReplayError:
        problem = " ".join(problem.split())[:200]
        return ReplayError(f"{self.path}:{lineno}: {problem}; {fix}")

    def _open(self) -> _Lines:
        try:
            return _Lines(self.path)
        except OSError as exc:
            raise ReplayError(
                f"cannot read recording {str(self.path)!r}: {exc.strerror}; check the path"
            ) from None

    def _line(self, lineno: int, raw: bytes) -> _Line:
        if len(raw) > MAX_LINE:
            raise self._fail(lineno, f"line longer than {MAX_LINE} bytes, not a flowtrace record")
        if not raw.strip():
            raise self._fail(lineno, "empty line")
        try:
            line = self._envelope.decode(raw)
        except MALFORMED as exc:
            raise self._fail(lineno, f"not a flowtrace record: {malformed(exc)}") from None
        if line.v != SCHEMA_VERSION:
            raise self._fail(
                lineno,
                f"schema version {line.v}, this flowtrace reads version {SCHEMA_VERSION}",
                "replay it with the flowtrace that wrote it, or record it again",
            )
        return line

    def _read_header(self, lines: _Lines) -> RecordingHeader:
        first = next(lines, None)
        if first is None:
            raise self._fail(1, "empty file, not a recording")
        line = self._line(1, first)
        if line.type != "recording":
            raise self._fail(
                1,
                f"starts with a record of type {line.type!r}, not a recording header"
                " (files from --sink ndjson hold outputs, not source events)",
            )
        try:
            header = self._header_decoder.decode(line.data)
        except MALFORMED as exc:
            raise self._fail(1, f"bad recording header: {malformed(exc)}") from None
        if not math.isfinite(header.start) or abs(header.start) > MAX_START:
            raise self._fail(
                1, f"start time {header.start} is not a finite number of seconds within 1e12 of 0"
            )
        wall = header.wall_start
        if wall is not None and not (math.isfinite(wall) and 0 <= wall <= MAX_WALL_START):
            raise self._fail(
                1, f"wall_start {wall} is not a time in Unix seconds between 1970 and 9999"
            )
        return header

    def recorded_types(self) -> list[tuple[str | None, list[tuple[str, str]] | None]]:
        """(name, fields) of each event type the header lists, in order."""
        header = self.header
        if header.events is not None:
            return [(name, fields) for name, fields in header.events]
        return [(header.event, header.fields)]

    def rebuilt_events(self) -> dict[str, type[Event]]:
        """Event types with the header's names, field names and kernel types
        (none filled automatically: for replay), checked as untrusted input."""
        recorded = self.recorded_types()
        if len(recorded) > MAX_TYPES:
            raise self._fail(1, f"{len(recorded)} event types, more than {MAX_TYPES}")
        rebuilt: dict[str, type[Event]] = {}
        for name, fields in recorded:
            if name is None or fields is None:
                raise self._fail(1, "the header lists no event type and fields to rebuild")
            if len(fields) > MAX_FIELDS:
                raise self._fail(1, f"{len(fields)} fields, more than {MAX_FIELDS}")
            try:
                types = [(field, parse_c_type(spelled)) for field, spelled in fields]
                rebuilt[name] = event_type(name, types)
                layout_of(rebuilt[name])  # a record a BPF program can fill
            except (ValueError, EventDefinitionError) as exc:
                raise self._fail(1, f"bad event type in the header: {exc}") from None
        return rebuilt

    def _refuse(self, names: Sequence[str]) -> ReplayError:
        held = ", ".join(str(name) for name, _ in self.recorded_types())
        emits = ", ".join(names)
        return self._fail(
            1, f"recording holds {held} events, the pipeline's source emits {emits}", _OTHER
        )


@dataclass(frozen=True)
class _Decoding:
    """How the event lines of one event type are read."""

    make: type[Any]
    names: tuple[str, ...]
    positional: bool
    kind: str
    limits: list[tuple[int, int]]
    data: msgspec.json.Decoder[Any]
    quick: msgspec.json.Decoder[Any]

    @classmethod
    def of(cls, event: type[Any]) -> _Decoding:
        strict, limits = _strict_type(event)
        # one decode per event line where the line is as flowtrace writes it;
        # anything else goes through the checks that name the problem
        quick = msgspec.defstruct(
            "EventLine", [("v", int), ("type", str), ("name", str), ("at", float), ("data", strict)]
        )
        return cls(
            event,
            event.__struct_fields__,
            issubclass(event, Event),
            getattr(event, "kind", "value"),
            limits,
            msgspec.json.Decoder(strict),
            msgspec.json.Decoder(quick),
        )


class RecordingReader(_RecordingFile, Generic[S]):
    """Reads a recording of ``event`` events (or of several event types, given
    as a tuple, in the order the header lists them); iterating yields
    ``(at, batch)`` pairs, batches as recorded (events with the same
    ``at``), split at ``batch_limit``. Holds one batch and one line in memory.

    Opening reads and checks the header. :attr:`end` is set once the ``end``
    record is read. Every problem raises :class:`ReplayError`, one line:
    ``PATH:LINE: problem; fix``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        event: type[S] | tuple[type[S], ...],
        *,
        batch_limit: int = BATCH_LIMIT,
    ) -> None:
        super().__init__(path)
        self.types: tuple[type[S], ...] = event if isinstance(event, tuple) else (event,)
        self.event = self.types[0]
        self.batch_limit = batch_limit
        recorded = self.recorded_types()
        if [name for name, _ in recorded] != [t.__name__ for t in self.types]:
            raise self._refuse([t.__name__ for t in self.types])
        for t, (name, fields) in zip(self.types, recorded, strict=True):
            if fields is not None and [list(f) for f in fields] != [
                list(f) for f in field_types(t)
            ]:
                listed = ", ".join(" ".join(f) for f in fields)
                raise self._fail(1, f"recorded {name} fields differ: ({listed})", _OTHER)
        self._end_decoder = msgspec.json.Decoder(RecordingEnd)
        self._decodings = {t.__name__: _Decoding.of(t) for t in self.types}
        self._only = self._decodings[self.event.__name__] if len(self.types) == 1 else None
        self.end: RecordingEnd | None = None
        self.end_at = 0.0
        self.events = 0
        self.cut_at: int | None = None
        """The line a recording cut short (no end record) stops before."""

    def __iter__(self) -> Iterator[tuple[float, list[S]]]:
        self.events, self.end, self.cut_at = 0, None, None
        last_at = self.header.start
        batch: list[S] = []
        lineno = 1
        with self._open() as lines:
            next(lines)
            for lineno, raw in enumerate(lines, start=2):
                if self.end is not None:
                    raise self._fail(lineno, "records after the end record")
                if not raw.endswith(b"\n") and len(raw) <= MAX_LINE:
                    lineno -= 1
                    break  # a last line cut in the middle: the recording stops before it
                line, at, read = self._event_line(lineno, raw)
                if at is None or not math.isfinite(at) or at < last_at:
                    raise self._fail(lineno, f"arrival time {at} missing or before {last_at}")
                if at - self.header.start > MAX_SPAN:
                    raise self._fail(
                        lineno,
                        f"arrival time {at} is more than {MAX_SPAN:.0f} s (366 days) after"
                        f" the recording's start {self.header.start}",
                    )
                if batch and (at != last_at or len(batch) >= self.batch_limit):
                    yield last_at, batch
                    batch = []
                last_at = at
                if read is None:  # the end record: _event_line raises for any other
                    assert line is not None
                    self.end, self.end_at = self._read_end(lineno, line), at
                    continue
                decoding, values = read
                for i, high in decoding.limits:
                    if values[i] > high:
                        raise self._fail(
                            lineno, f"{decoding.names[i]} {values[i]} does not fit its kernel type"
                        )
                make = decoding.make
                if decoding.positional:
                    batch.append(make(*values))
                else:
                    batch.append(make(**dict(zip(decoding.names, values, strict=True))))
                self.events += 1
        if batch:
            yield last_at, batch
        if self.end is None:  # killed while recording: what was written stands
            self.cut_at = lineno + 1
            self.end = RecordingEnd(events=self.events, received=self.events, lost=0)

    def _event_line(
        self, lineno: int, raw: bytes
    ) -> tuple[_Line | None, float | None, tuple[_Decoding, tuple[Any, ...]] | None]:
        """(envelope, at, (its type's decoding, field values)): the values for
        an event of an expected type, the envelope alone for the end record;
        raises for anything else."""
        only = self._only
        if only is not None and len(raw) <= MAX_LINE:
            try:
                quick: Any = only.quick.decode(raw)
            except MALFORMED:  # checked again below, with the problem named
                pass
            else:
                if (quick.v, quick.type, quick.name) == (
                    SCHEMA_VERSION,
                    only.kind,
                    only.make.__name__,
                ):
                    return None, quick.at, (only, msgspec.structs.astuple(quick.data))
        line = self._line(lineno, raw)
        decoding = self._decodings.get(line.name or "")
        if decoding is not None and line.type == decoding.kind:
            return line, line.at, (decoding, self._fields(lineno, decoding, line.data))
        if line.type == "end":
            return line, line.at, None
        raise self._fail(lineno, f"unexpected {line.type} record {line.name!r}")

    def _fields(self, lineno: int, decoding: _Decoding, data: msgspec.Raw) -> tuple[Any, ...]:
        try:
            return msgspec.structs.astuple(decoding.data.decode(data))
        except MALFORMED as exc:
            raise self._fail(
                lineno, f"bad {decoding.make.__name__} event: {malformed(exc)}"
            ) from None

    def _read_end(self, lineno: int, line: _Line) -> RecordingEnd:
        try:
            end = self._end_decoder.decode(line.data)
        except MALFORMED as exc:
            raise self._fail(lineno, f"bad end record: {malformed(exc)}") from None
        if end.events != self.events:
            raise self._fail(
                lineno, f"end record counts {end.events} events, the recording holds {self.events}"
            )
        return end

    def check(self) -> RecordingEnd:
        """Read the whole recording once, raising at the first problem."""
        for _ in self:
            pass
        assert self.end is not None
        return self.end


def open_recording(path: str | os.PathLike[str]) -> RecordingReader[Event]:
    """A reader of the recording at ``path`` with its event types rebuilt
    from its header (no pipeline needed: for tools reading any recording)."""
    rebuilt = _RecordingFile(path).rebuilt_events()
    return RecordingReader(path, tuple(rebuilt.values()))


def replay_event(
    source: Source[Any], path: str | os.PathLike[str]
) -> tuple[type[msgspec.Struct], ...] | None:
    """The event types (one, or several for a source emitting several) to
    replay the recording at ``path`` into ``source``'s pipeline, or None when
    the source declares none (no msgspec Struct types).

    The source's ``replay_types()`` says what it reads: a name in it stands
    for a type generated from the running kernel (as
    :class:`~flowtrace.typed_sources.TracepointSource` generates), which is
    rebuilt from the recording's header (field names and kernel types), so
    nothing is read from the kernel; a recording without that type is
    refused.
    """
    wanted: tuple[Any, ...] = source.replay_types()
    if not wanted:
        return None
    if any(isinstance(w, str) for w in wanted):
        recording = _RecordingFile(path)
        rebuilt = recording.rebuilt_events()
        names = [w if isinstance(w, str) else w.__name__ for w in wanted]
        if any(isinstance(w, str) and w not in rebuilt for w in wanted):
            raise recording._refuse(names)
        wanted = tuple(rebuilt[w] if isinstance(w, str) else w for w in wanted)
    if not all(isinstance(w, type) and issubclass(w, msgspec.Struct) for w in wanted):
        return None
    return wanted


class _Lines:
    """Lines of a file (with their newline), each read with a length bound.
    Only regular files: a FIFO or device would block or never end."""

    def __init__(self, path: Path) -> None:
        self._path = path
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a recording is a file)")
        self._file = path.open("rb")

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            line = self._file.readline(MAX_LINE + 1)
        except OSError as exc:
            raise ReplayError(f"{self._path}: cannot read: {exc.strerror}; check it") from None
        if not line:
            raise StopIteration
        return line
