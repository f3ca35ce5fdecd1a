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

Receipts (:class:`~flowtrace.records.Receipt`) are side records with one
more rule: they travel *behind* the results of their batch, never ahead, so
a receipt reaches the sink only after what its batch became. A batch holds
at most one receipt, as its last item (its source puts it there, and every
stage keeps it there), so finding it costs nothing. An operator that emits
everything for a batch while processing it (``holds_events = False``:
filter, map, flat_map) passes the receipt on right after its results;
any other operator (windows, joins, custom ones) may still hold events of
that batch, so the runtime holds the latest receipt in front of it and
sends it on after ``finish()``. An operator that knows better handles
receipts itself (``accepts_side_records = True``, as
:func:`~flowtrace.operators.merge_by` does: it releases a receipt once the
windows its batch went into are emitted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .records import Receipt, SideRecord

__all__ = [
    "Routed",
    "has_side_records",
    "process_batch",
    "records_in",
    "route_side_records",
    "take_receipt",
]


class Routed(Protocol):
    """What routing needs of an operator (see :class:`flowtrace.stages.Operator`)."""

    @property
    def accepts_side_records(self) -> bool: ...
    @property
    def holds_events(self) -> bool: ...
    def process(self, batch: list[Any]) -> Sequence[Any]: ...


def take_receipt(batch: list[Any]) -> tuple[list[Any], Receipt | None]:
    """``(batch without its receipt, the receipt or None)``; copies nothing
    when there is no receipt."""
    if batch and type(batch[-1]) is Receipt:
        return batch[:-1], batch[-1]
    return batch, None


def records_in(batch: list[Any]) -> int:
    """How many records ``batch`` carries, not counting its receipt."""
    return len(batch) - 1 if batch and type(batch[-1]) is Receipt else len(batch)


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


def process_batch(op: Routed, batch: list[Any], held: list[Receipt] | None = None) -> list[Any]:
    """What a synchronous operator emits for ``batch``: its side records,
    unchanged, then ``op.process`` of the other events, then the batch's
    receipt if the operator does not hold events (otherwise the receipt
    replaces the one in ``held``, which the runtime sends on after
    ``finish()``; without ``held`` it is passed on as if the operator held
    nothing). ``process`` is called once per batch, also when only side
    records came (a window emits what is due on every batch). What
    ``process`` raises propagates."""
    receipt = None
    if not op.accepts_side_records:
        batch, receipt = take_receipt(batch)
    side, events = route_side_records(op, batch)
    out = op.process(events)
    result = [*side, *out] if side else list(out)
    if receipt is not None:
        if held is not None and op.holds_events:
            held[:] = [receipt]
        else:
            result.append(receipt)
    return result
