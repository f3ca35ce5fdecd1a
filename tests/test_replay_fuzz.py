"""Fuzzing the recording reader: whatever the bytes, it yields valid events or
raises one ReplayError naming the file and line; nothing else escapes. Where
the change is known (one field of one record), what is read back is exact."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtrace.recorder import field_types
from flowtrace.replay import RecordingReader, ReplayError
from flowtrace.schema import RecordEncoder, RecordingEnd, RecordingHeader
from flowtrace.sources.syscalls import SyncCall

ENCODER = RecordEncoder()
HEADER = RecordingHeader(
    source="sync", event="SyncCall", fields=field_types(SyncCall), clock="monotonic", start=5.0
)
EVENTS = [SyncCall(ts=1000 + i, pid=40 + i, comm=f"c{i}") for i in range(6)]
VALID = [
    ENCODER.json_line(HEADER),
    *(ENCODER.json_line(e, at=5.5 + i // 2) for i, e in enumerate(EVENTS)),
    ENCODER.json_line(RecordingEnd(events=6, received=6, lost=0), at=9.0),
]
WHERE = re.compile(r"^(.+):(\d+): [^\n]+; [^\n]+$")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def read_all(data: bytes) -> list[SyncCall] | ReplayError:
    """Everything the reader yields from ``data``, or the error it raised.
    A recording cut short (no end record) yields its whole event lines and
    says where it stops."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.rec"
        path.write_bytes(data)
        try:
            reader = RecordingReader(path, SyncCall, batch_limit=4)
            events = [e for _, batch in reader for e in batch]
        except ReplayError as exc:
            match = WHERE.match(str(exc))
            assert match, str(exc)
            assert match.group(1) == str(path)
            assert 1 <= int(match.group(2)) <= data.count(b"\n") + 1
            return exc
        assert reader.end is not None and reader.end.events == len(events)
        if reader.cut_at is not None:  # what was written before the cut, whole lines only
            assert 2 <= reader.cut_at <= data.count(b"\n") + 2
            assert len(events) <= max(data.count(b"\n") - 1, 0)
        for e in events:
            assert isinstance(e, SyncCall)
            assert 0 <= e.ts < 2**64 and 0 <= e.pid < 2**32 and len(e.comm) <= 16
        return events


def test_the_valid_recording_reads_back() -> None:
    assert read_all(b"".join(VALID)) == EVENTS


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data: bytes) -> None:
    read_all(data)


@FUZZ
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=len(VALID)))
def test_garbage_in_place_of_a_line(garbage: bytes, index: int) -> None:
    lines = list(VALID)
    lines[index:index] = [garbage]
    read_all(b"".join(lines))


@FUZZ
@given(st.integers(min_value=0, max_value=len(b"".join(VALID))))
def test_truncated_anywhere(cut: int) -> None:
    """Cut at any byte (a recorder killed mid-write): the events on the whole
    lines before the cut replay, and the cut is said; only a cut header fails."""
    data = b"".join(VALID)
    result = read_all(data[:cut])
    whole_lines = data[:cut].count(b"\n")
    if cut < len(VALID[0]) - 1:  # inside the header
        assert isinstance(result, ReplayError)
    elif cut < len(data) - 1:
        assert result == EVENTS[: min(max(whole_lines - 1, 0), len(EVENTS))]


@FUZZ
@given(
    st.integers(min_value=0, max_value=len(VALID) - 1),
    st.sampled_from(["v", "type", "name", "at", "data", "ts", "pid", "comm", "events", "start"]),
    json_values,
)
def test_any_value_in_any_field(index: int, field: str, value: Any) -> None:
    """Read back only when the changed record still says what it said: an
    event keeps its envelope (a foreign ``name``, ``type`` or ``v`` is an
    error) and carries exactly the new value; any other record leaves the
    events as they were."""
    record = json.loads(VALID[index])
    target = record["data"] if field in ("ts", "pid", "comm", "events", "start") else record
    before = target.get(field, KeyError)
    target[field] = value
    lines = list(VALID)
    lines[index] = json.dumps(record).encode() + b"\n"
    result = read_all(b"".join(lines))
    if isinstance(result, ReplayError):
        return
    same = type(value) is type(before) and value == before
    expected = list(EVENTS)
    if 1 <= index <= len(EVENTS):
        if field in ("ts", "pid", "comm"):
            expected[index - 1] = msgspec.structs.replace(EVENTS[index - 1], **{field: value})
        elif field != "at":
            assert same, f"event line read back with {field}={value!r}"
    assert result == expected


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=len(VALID) - 1), min_size=1, max_size=12))
def test_lines_reordered_dropped_or_repeated(order: list[int]) -> None:
    result = read_all(b"".join(VALID[i] for i in order))
    if not isinstance(result, ReplayError):
        # a header, then events in time order: all of them and the end (which
        # counts them, so none is missing), or a recording cut short (no end)
        assert result == [EVENTS[i - 1] for i in order if 1 <= i <= len(EVENTS)]
        whole = order == list(range(len(VALID)))
        assert whole or len(VALID) - 1 not in order, order
