"""Side records travel past every operator, untouched.

A :class:`~flowtrace.records.SideRecord` (a ``LateEvent``, a
``JoinIncomplete``) is what an operator upstream could not fold into its
results but passes on rather than lose. No operator applies its predicate,
function, key or aggregate to one: :func:`around_side_records` hands the
operator only the other events and puts the side records back into its
output, so ``join(...) | filter(F.latency_ns > X)`` works although a
``JoinIncomplete`` has no ``latency_ns``.

Where they go in the output:

* by default, *in place*: the operator's logic runs on each run of events
  between side records, and its output for a run takes that run's place
  (filter, map, flat_map, sample, distinct, throttle, join, ``per_event``,
  ``EventOperator``);
* with ``whole_batch=True``, *ahead*: the side records of a batch come
  first, in their order, followed by what the operator emits for all of the
  batch's other events at once (windows, whose watermark and intervals
  are per batch).

A batch without side records, the common case, is handed to the operator
as it is; finding out costs one C-level pass over the event types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..records import SideRecord

__all__ = ["around_side_records", "has_side_records"]


def has_side_records(batch: list[Any]) -> bool:
    """Whether ``batch`` holds a side record (checked per type, not per event)."""
    return any(issubclass(kind, SideRecord) for kind in {*map(type, batch)})


def around_side_records(
    batch: list[Any],
    process: Callable[[list[Any]], Sequence[Any]],
    *,
    whole_batch: bool = False,
) -> Sequence[Any]:
    """``process`` applied to the events of ``batch`` that are not side
    records, with the side records passed through unchanged: in place
    (``process`` runs once per run of events between them), or, with
    ``whole_batch``, ahead of the output of one ``process`` call on all the
    other events. In place, ``process`` never sees an empty run; with
    ``whole_batch`` it is called exactly once per batch, also with no events
    left (a window emits what is due on every batch). What ``process``
    raises propagates."""
    if not has_side_records(batch):
        return process(batch)
    if whole_batch:
        side = [e for e in batch if isinstance(e, SideRecord)]
        rest = [e for e in batch if not isinstance(e, SideRecord)]
        return [*side, *process(rest)]
    out: list[Any] = []
    run: list[Any] = []
    for event in batch:
        if isinstance(event, SideRecord):
            if run:
                out += process(run)
                run = []
            out.append(event)
        else:
            run.append(event)
    if run:
        out += process(run)
    return out
