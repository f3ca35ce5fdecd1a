"""Side records travel past operators, routed by the runtime.

A :class:`~flowtrace.records.SideRecord` (a ``LateEvent``, a
``JoinIncomplete``) is what an operator upstream could not fold into its
results but passes on rather than lose. The runtime, not each operator,
takes side records out of a batch before the operator sees it and sends them
on unchanged, in their order, ahead of what the operator emits for that
batch. So no operator applies its predicate, function, key or aggregate to
one, and ``join(...) | filter(F.latency_ns > X)`` works although a
``JoinIncomplete`` has no ``latency_ns``.

An operator that wants to see side records says so with
``accepts_side_records = True`` (see :class:`~flowtrace.stages.Operator`);
it then gets whole batches and passes on what it chooses.

A batch without side records, the common case, goes to the operator as it
is; finding out costs one C-level pass over the event types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .records import SideRecord

__all__ = ["Routed", "has_side_records", "process_batch", "route_side_records"]


class Routed(Protocol):
    """What routing needs of an operator (see :class:`flowtrace.stages.Operator`)."""

    @property
    def accepts_side_records(self) -> bool: ...
    def process(self, batch: list[Any]) -> Sequence[Any]: ...


def has_side_records(batch: Sequence[Any]) -> bool:
    """Whether ``batch`` holds a side record (checked per type, not per event)."""
    return any(issubclass(kind, SideRecord) for kind in {*map(type, batch)})


def route_side_records(op: Routed, batch: list[Any]) -> tuple[list[Any], list[Any]]:
    """``(side records to send on now, the batch for op)``: the side records
    of ``batch`` and its other events, each in their order; ``([], batch)``
    when there are none or ``op`` accepts side records."""
    if op.accepts_side_records or not has_side_records(batch):
        return [], batch
    side = [e for e in batch if isinstance(e, SideRecord)]
    return side, [e for e in batch if not isinstance(e, SideRecord)]


def process_batch(op: Routed, batch: list[Any]) -> list[Any]:
    """What a synchronous operator emits for ``batch``: its side records,
    unchanged, then ``op.process`` of the other events. ``process`` is called
    once per batch, also when only side records came (a window emits what is
    due on every batch). What ``process`` raises propagates."""
    side, events = route_side_records(op, batch)
    out = op.process(events)
    return [*side, *out] if side else list(out)
