"""Stateless per-event operators: filter, map, flat_map.

They hold nothing between batches and emit, for each batch, what they
computed from it, in input order. Each batch is one list comprehension (or
a C-level ``filter``/``map``), so the per-event cost is the user's function
call and nothing else. Side records from upstream (an incomplete join, a
late event) are not handed to the user's function: the runtime sends them on
unchanged, ahead of the batch's results. An exception from the user's
function fails the stage (:class:`~flowtrace.errors.StageError` names it);
nothing is skipped silently.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, overload

from ..errors import PipelineDefinitionError
from ..kernel_forms import FilterForm, KernelForm, UserOnly
from ..stages import Operator
from ._fields import OpaqueFunction, PassesEvents, missing_field
from .predicates import AllOf, Compare, Predicate

__all__ = ["Filter", "FlatMap", "Map", "filter", "flat_map", "map"]

T = TypeVar("T")
U = TypeVar("U")


class Filter(PassesEvents, Operator[T, T], Generic[T]):
    """Keeps the events ``predicate`` is true for, in order.

    Buffers nothing; emits per batch; events it rejects are not dropped in
    the loss sense (they are what was asked for), so the stage's ``in`` and
    ``out`` counters show how many passed. ``predicate`` is a field
    predicate (data, see :attr:`predicate`) or any function. Side records
    go on ahead of the batch's results, never tested. End of stream:
    nothing is held, nothing more is emitted. Errors: an event without a
    field the predicate reads fails the stage with a one-line message
    naming the field; an exception from the predicate fails the stage.
    """

    holds_events = False

    def __init__(self, predicate: Callable[[T], object], *, name: str = "") -> None:
        if not callable(predicate):
            raise PipelineDefinitionError(
                f"filter expects a function or a field predicate, got {type(predicate).__name__}"
            )
        self.test = predicate
        self.name = name or "filter"

    @property
    def predicate(self) -> Predicate | None:
        """The field predicate (field, op, value tree) when the filter is one,
        so it can be moved into the kernel; None for a plain function."""
        return self.test if isinstance(self.test, Predicate) else None

    def reads_fields(self) -> tuple[str, ...]:
        """The fields a field predicate names (empty for a plain function)."""
        predicate = self.predicate
        return predicate.fields() if predicate is not None else ()

    def kernel_form(self) -> KernelForm | UserOnly:
        """A field predicate runs in the kernel; a function does not."""
        predicate = self.predicate
        if predicate is None:
            return UserOnly(
                "a Python function; a field predicate (F.pid == 42) can run in the kernel"
            )
        return FilterForm(predicate.kernel_condition())

    def process(self, batch: list[T]) -> Sequence[T]:
        try:
            if isinstance(self.test, Predicate):
                return self.test.select(batch)
            return list(builtins.filter(self.test, batch))
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc


class Map(OpaqueFunction, Operator[T, U], Generic[T, U]):
    """Emits ``fn(event)`` for every event, in order, per batch. Buffers
    nothing. Side records go on ahead of the batch's results, never
    handed to ``fn``. End of stream: nothing is held, nothing more is
    emitted. Errors: an exception from ``fn`` fails the stage (a missing
    event field with a one-line message naming it)."""

    holds_events = False

    def __init__(self, fn: Callable[[T], U], *, name: str = "") -> None:
        if not callable(fn):
            raise PipelineDefinitionError(f"map expects a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or "map"

    def process(self, batch: list[T]) -> Sequence[U]:
        try:
            return list(builtins.map(self.fn, batch))
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc


class FlatMap(OpaqueFunction, Operator[T, U], Generic[T, U]):
    """Emits every item of ``fn(event)`` for every event, in order, per batch
    (an empty iterable emits nothing). Buffers nothing beyond one batch's
    results. Side records go on ahead of the batch's results, never
    handed to ``fn``. End of stream: nothing is held, nothing more is
    emitted. Errors: an exception from ``fn`` or from iterating its result
    fails the stage (a missing event field with a one-line message naming
    it)."""

    holds_events = False

    def __init__(self, fn: Callable[[T], Iterable[U]], *, name: str = "") -> None:
        if not callable(fn):
            raise PipelineDefinitionError(f"flat_map expects a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or "flat_map"

    def process(self, batch: list[T]) -> Sequence[U]:
        fn = self.fn
        try:
            return [item for event in batch for item in fn(event)]
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc


@overload
def filter(predicate: Callable[[T], object], /, *, name: str = "") -> Filter[T]: ...
@overload
def filter(*, name: str = "", **fields: Any) -> Filter[Any]: ...
def filter(
    predicate: Callable[[T], object] | None = None, /, *, name: str = "", **fields: Any
) -> Filter[Any]:
    """Keep events for which ``predicate`` is true.

    ``filter(lambda e: e.pid == 42)``, ``filter(F.comm.isin({"bash", "sh"}))``,
    or, for equality on fields, ``filter(pid=42, comm="bash")`` (the same as
    ``filter((F.pid == 42) & (F.comm == "bash"))``). Field predicates are
    data a later step can move into the kernel. See :class:`Filter`.
    """
    if predicate is not None and fields:
        raise PipelineDefinitionError(
            "filter takes a predicate or field=value arguments, not both:"
            " combine them with & (F.pid == 1) & (F.comm == 'sh')"
        )
    if predicate is None:
        if not fields:
            raise PipelineDefinitionError("filter needs a predicate or field=value arguments")
        parts = [Compare(k, "==", v) for k, v in fields.items()]
        predicate = parts[0] if len(parts) == 1 else AllOf(tuple(parts))
    return Filter(predicate, name=name)


def map(fn: Callable[[T], U], /, *, name: str = "") -> Map[T, U]:
    """Transform each event with ``fn``. See :class:`Map`."""
    return Map(fn, name=name)


def flat_map(fn: Callable[[T], Iterable[U]], /, *, name: str = "") -> FlatMap[T, U]:
    """Replace each event with the items of ``fn(event)``. See :class:`FlatMap`."""
    return FlatMap(fn, name=name)
