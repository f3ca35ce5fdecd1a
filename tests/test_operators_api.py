"""The public surface of flowtrace.operators: __all__ is exactly what the
package exports, and every public operator documents its contract."""

from __future__ import annotations

import inspect

import flowtrace.operators as ops
from flowtrace.stages import Operator


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ops).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert sorted(ops.__all__) == sorted(public)


def test_every_export_has_a_docstring() -> None:
    for name in ops.__all__:
        value = getattr(ops, name)
        if callable(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def test_operator_classes_state_buffering_and_end_of_stream() -> None:
    """The issue asks each operator's docstring to say what it buffers, its
    bounds, when it emits, ordering, end of stream and errors; check the
    classes name at least buffering/bounds and emission."""
    for name in ops.__all__:
        value = getattr(ops, name)
        if (
            inspect.isclass(value)
            and issubclass(value, Operator)
            and value is not ops.EventOperator
        ):
            doc = (inspect.getdoc(value) or "").lower()
            assert any(w in doc for w in ("buffer", "hold", "bound", "remember")), name
            assert any(w in doc for w in ("emit", "pass", "keep")), name


def test_records_encode_structured_for_machines() -> None:
    import msgspec

    from flowtrace.records import Bucket, Histogram, JoinIncomplete, JoinPair, LateEvent

    class Req(msgspec.Struct, frozen=True):
        ts: int
        dev: int

    records = [
        Histogram(field="bytes", unit="kbytes", scale="log2", buckets=[Bucket(0, 1, 3)]),
        JoinPair(key={"dev": 1}, start=Req(1, 1), complete=Req(5, 1), latency_ns=4),
        JoinIncomplete(key={"dev": 2}, start=Req(1, 2), reason="timeout", waited=10.0),
        LateEvent(event=Req(0, 3), watermark=2.0, window_start=0.0, window_end=1.0),
    ]
    decoded = [msgspec.json.decode(msgspec.json.encode(r)) for r in records]
    assert decoded[0]["buckets"] == [{"low": 0, "high": 1, "count": 3}]
    assert decoded[1]["key"] == {"dev": 1} and decoded[1]["start"] == {"ts": 1, "dev": 1}
    assert decoded[2]["reason"] == "timeout"
    assert decoded[3]["event"] == {"ts": 0, "dev": 3}
    assert [r.kind for r in records] == ["histogram", "join_pair", "join_incomplete", "late_event"]
