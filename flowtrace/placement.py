"""The planner: which operators after a kernel source run inside its program.

:func:`place` walks the operators after a kernel source in order and asks
each for its in-kernel form (``kernel_form()``, see
:mod:`flowtrace.kernel_forms`) given the record the kernel fills at that
point. The longest prefix that has one is compiled into the source's
program (:mod:`flowtrace.kernel_chain`); the walk stops at the first
operator without one, and every later operator runs in Python, unchanged.
Each operator's place comes with the reason: what it does in the kernel,
or why it could not move (a Python function, a field the kernel record
does not have, an unsupported aggregate, a sliding or event-time window,
an operator before it that runs in user space...).

Results are the same either way: a form describes exactly what the
operator computes, and what leaves the kernel is built by the operator's
own code (see :class:`~flowtrace.kernel_forms.AggregateForm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .events import Layout
from .kernel_aggregate import AggregateStage
from .kernel_chain import ChainBuilder, CompiledChain, FilterStage, Stage, Unsupported
from .kernel_forms import (
    AggregateForm,
    FilterForm,
    JoinForm,
    KernelForm,
    Place,
    RunningForm,
    UserOnly,
)
from .kernel_join import JoinStage
from .kernel_running import RunningStage
from .kernel_view import View

__all__ = ["KERNEL", "USER", "Placed", "PlacedOperator", "place_operators"]

KERNEL = "kernel"
USER = "user"


class PlacedOperator(Protocol):
    """What the planner needs of an operator."""

    def stage_name(self) -> str: ...

    def kernel_form(self) -> KernelForm | UserOnly: ...


class Placed:
    """The outcome of a walk: each operator's place, and the compiled chain
    of those in the kernel (None when none are)."""

    def __init__(self, places: list[Place], chain: CompiledChain | None) -> None:
        self.places = places
        self.chain = chain

    @property
    def in_kernel(self) -> int:
        return sum(1 for p in self.places if p.where == KERNEL)


def _stage(builder: ChainBuilder, number: int, form: KernelForm) -> Stage:
    if isinstance(form, FilterForm):
        return builder.filter(form)
    if isinstance(form, AggregateForm):
        return AggregateStage(number, form, builder.view)
    if isinstance(form, JoinForm):
        return JoinStage(number, form, builder.view)
    if isinstance(form, RunningForm):
        return RunningStage(number, form, builder.view)
    raise Unsupported(f"an in-kernel form flowtrace does not know: {type(form).__name__}")


def place_operators(operators: Sequence[PlacedOperator], record: Layout[Any], view: View) -> Placed:
    """Place ``operators`` after a kernel source whose probes fill
    ``record`` (seen as ``view``)."""
    builder = ChainBuilder(record, view)
    places: list[Place] = []
    stopped: str | None = None
    for number, op in enumerate(operators):
        name = op.stage_name()
        if stopped is None:
            stopped = builder.closed
        if stopped is not None:
            places.append(Place(name, USER, stopped))
            continue
        form = op.kernel_form()
        if isinstance(form, UserOnly):
            places.append(Place(name, USER, form.why))
            stopped = f"follows {name}, which runs in user space"
            continue
        try:
            stage = _stage(builder, number, form)
            builder.add(stage)
        except Unsupported as exc:
            places.append(Place(name, USER, str(exc)))
            stopped = f"follows {name}, which runs in user space"
            continue
        places.append(Place(name, KERNEL, stage.what))
    _trim(builder, places)
    return Placed(places, builder.compile() if builder.stages else None)


def _trim(builder: ChainBuilder, places: list[Place]) -> None:
    """Move back to user space what cannot end the kernel's part: filters
    after a join (its pairs leave whole), then a last join whose pairs
    cannot leave as one record."""
    stages = builder.stages

    def back(why: str) -> None:
        index = len(stages) - 1
        places[index] = Place(places[index].stage, USER, why)
        stages.pop()

    if not any(isinstance(s, JoinStage) for s in stages):
        return
    while isinstance(stages[-1], FilterStage):
        back("filters a join's pairs, which leave the kernel whole: it runs on them in user space")
    last = stages[-1]
    if isinstance(last, JoinStage) and last.pairs_refused is not None:
        back(last.pairs_refused)
