"""Operators a tracing user reaches for next: rate, sample, distinct, throttle.

(Top-N is ``count(by, top=N)``.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

from ..context import StageContext
from ..stages import Operator
from ._fields import KeyGetter, KeySpec, PassesEvents, missing_field, positive, positive_int
from ._intervals import nanoseconds
from .aggregates import Rate
from .windowing import ProcessingTime, Tumbling, WindowClock, Windower
from .windows import DEFAULT_MAX_KEYS, Window

__all__ = ["Distinct", "Sample", "Throttle", "distinct", "rate", "sample", "throttle"]

T = TypeVar("T")


def rate(
    *,
    every: Windower | None = Tumbling(1.0),
    by: KeySpec | None = None,
    clock: WindowClock = ProcessingTime(),
    max_keys: int = DEFAULT_MAX_KEYS,
    limit: int | None = None,
    name: str = "",
) -> Window[Any]:
    """Events per second of each window, every second by default (per key
    with ``by``): ``WindowResult(aggregate="rate", value=events / window
    length)``. An interval without events reports 0.0 (unkeyed).
    ``every=Sliding(3.0, 1.0)`` averages over a longer sliding window.
    Timing, bounds and end of stream as :class:`~flowtrace.operators.Window`;
    the length divided by is always time that has passed (see
    :class:`~flowtrace.operators.Rate`): the first windows of a sliding rate
    begin when the operator opened, and at end of stream the last window,
    emitted once, ends at that moment and is divided by its real length (no
    rate, ``value=None``, if that length is zero)."""
    return Window(Rate(), every=every, clock=clock, by=by, max_keys=max_keys, limit=limit,
                  name=name or "rate")  # fmt: skip


class Sample(PassesEvents, Operator[T, T], Generic[T]):
    """Passes one event in ``n``: the 1st, the (n+1)th, ... counted across
    batches, in order; emits per batch. Buffers nothing (holds one counter).
    The events it skips are what was asked for, not losses: the stage's
    in/out counters show them. Side records from upstream go on ahead
    of the batch's results and are not counted as events. End of stream:
    nothing is held, nothing more is emitted. Errors: ``n`` that is not a
    positive integer raises :class:`~flowtrace.errors.PipelineDefinitionError`.
    """

    def __init__(self, n: int, *, name: str = "") -> None:
        self.n = positive_int(n, "sample: n")
        self.name = name or "sample"

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._skip = 0  # events to skip before the next one passed

    def process(self, batch: list[T]) -> Sequence[T]:
        size, skip, n = len(batch), self._skip, self.n
        if skip >= size:
            self._skip = skip - size
            return []
        kept = batch[skip::n]
        self._skip = skip + len(kept) * n - size
        return kept


class Distinct(PassesEvents, Operator[T, T], Generic[T]):
    """Passes the first event of each key and holds back later ones with a
    key it remembers, in order; emits per batch.

    Remembers at most ``max_keys`` keys: beyond that, the key first seen
    longest ago is forgotten (and passes again when it recurs). With
    ``forget_after``, a key is also forgotten that many seconds (pipeline
    clock) after it was first passed. Side records from upstream go on
    ahead of the batch's results. Holding back repeats is what was
    asked for, not a loss: the stage's in/out counters show how many. End
    of stream: nothing is emitted (held keys are only memory of the past).
    Errors: a missing key field fails the stage with a message naming it.
    """

    def __init__(
        self,
        by: KeySpec,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        forget_after: float | None = None,
        name: str = "",
    ) -> None:
        self.key = KeyGetter.of(by, "distinct")
        self.max_keys = positive_int(max_keys, "distinct: max_keys")
        positive(forget_after, "distinct: forget_after")
        self.forget_after = forget_after
        self.name = name or "distinct"

    def reads_fields(self) -> tuple[str, ...]:
        """The key's fields (empty for a key function)."""
        return self.key.fields

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def process(self, batch: list[T]) -> Sequence[T]:
        seen, now = self._seen, self.ctx.clock.now()
        if self.forget_after is not None:
            due = now - self.forget_after
            while seen and next(iter(seen.values())) <= due:
                seen.popitem(last=False)
        out = []
        try:
            for event, key in zip(batch, map(self.key.get, batch), strict=True):
                if key not in seen:
                    seen[key] = now
                    out.append(event)
                    if len(seen) > self.max_keys:
                        seen.popitem(last=False)
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc
        return out


class Throttle(PassesEvents, Operator[T, T], Generic[T]):
    """Passes at most ``limit`` events per ``per`` seconds of the pipeline
    clock, the first ones of each interval, in order; the rest are counted
    as dropped (``throttled``). Intervals are fixed, counted in whole
    nanoseconds from when the operator opens (in a pipeline: when the
    source is ready). Protects a console or a socket from a flood without
    hiding that it happened. Buffers nothing (holds one counter). Side
    records from upstream go on ahead of the batch's results and do not
    count against the limit. End of stream: nothing is held, nothing more is
    emitted. Errors: a ``limit`` or ``per`` that is not positive raises
    :class:`~flowtrace.errors.PipelineDefinitionError`."""

    def __init__(self, limit: int, per: float = 1.0, *, name: str = "") -> None:
        self.limit = positive_int(limit, "throttle: limit")
        positive(per, "throttle: per", allow_none=False)
        self.per = per
        self.name = name or "throttle"

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._origin_ns = nanoseconds(ctx.clock.now())
        self._per_ns = max(1, nanoseconds(self.per))
        self._interval = 0
        self._passed = 0

    def process(self, batch: list[T]) -> Sequence[T]:
        interval = (nanoseconds(self.ctx.clock.now()) - self._origin_ns) // self._per_ns
        if interval != self._interval:
            self._interval, self._passed = interval, 0
        room = self.limit - self._passed
        if len(batch) <= room:
            self._passed += len(batch)
            return batch
        self._passed = self.limit
        self.ctx.stats.drop("throttled", len(batch) - room)
        return batch[:room]


def sample(n: int, *, name: str = "") -> Sample[Any]:
    """One event in ``n``. See :class:`Sample`."""
    return Sample(n, name=name)


def distinct(
    by: KeySpec,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    forget_after: float | None = None,
    name: str = "",
) -> Distinct[Any]:
    """The first event of each key. See :class:`Distinct`."""
    return Distinct(by, max_keys=max_keys, forget_after=forget_after, name=name)


def throttle(limit: int, per: float = 1.0, *, name: str = "") -> Throttle[Any]:
    """At most ``limit`` events per ``per`` seconds. See :class:`Throttle`."""
    return Throttle(limit, per, name=name)
