"""Pairing start and complete events by key: ``join(Issue, Complete, key="req")``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from itertools import repeat
from typing import Any, Generic, TypeVar

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..kernel_forms import JoinForm, KernelForm, UserOnly
from ..records import JoinIncomplete, JoinPair
from ..stages import Operator
from ._fields import KeyGetter, KeySpec, ValueGetter, missing_field, positive
from .windows import DEFAULT_MAX_KEYS

__all__ = ["REPEAT_POLICIES", "Join", "join"]

S = TypeVar("S")
C = TypeVar("C")

REPEAT_POLICIES = ("replace", "keep")


def _matcher(
    spec: type[Any] | Callable[[Any], bool], what: str
) -> Callable[[list[Any]], list[Any]]:
    """A function flagging, for a whole batch, which events match ``spec``
    (C-level ``isinstance`` for an event type)."""
    if isinstance(spec, type):
        return lambda batch: list(map(isinstance, batch, repeat(spec)))
    if callable(spec):
        return lambda batch: list(map(spec, batch))
    raise PipelineDefinitionError(f"join: {what} must be an event type or a predicate function")


class Join(Operator[Any, Any], Generic[S, C]):
    """Pairs each complete event with the pending start event of the same key.

    Emits, per batch, first the incompletes that expired by then (see
    below), then, in input order: a :class:`~flowtrace.records.JoinPair`
    (start, complete, ``latency_ns``) for each complete whose key has a
    pending start; every event that is neither start nor complete,
    unchanged. Side records from upstream go on ahead of all that, never
    matched as a start or complete (a predicate never sees one).
    Latency is ``complete.<time_field> - start.<time_field>`` (nanoseconds;
    ``time_field=None``: the difference of arrival times on the pipeline
    clock, which is only as fine as batches are).

    Buffers the pending starts: at most ``max_pending`` keys, in arrival order.

    * A start whose key is new while ``max_pending`` starts are pending is
      counted as dropped (``pending_limit``) and not kept, so a flood of
      starts without completes holds memory at the bound.
    * A repeated start (its key already pending), ``on_repeat="replace"``
      (default, as bcc's tools overwrite their start map): the new start
      takes the key's place and the old one is emitted as a
      :class:`~flowtrace.records.JoinIncomplete` (reason ``replaced``);
      ``"keep"``: the first start stays and the new one is emitted as
      incomplete (reason ``repeated``). Either is counted as dropped
      (``start_replaced`` / ``start_repeated``).
    * A start pending for ``timeout`` seconds of the pipeline clock expires:
      emitted as incomplete (reason ``timeout``) and counted (``expired``).
      Expiry runs on every batch and on a tick, so also when no events
      arrive; it happens at most ``min(timeout, 1 s)`` after it is due.
    * A complete without a pending start is counted
      (``complete_without_start``) and not emitted.
    * End of stream: every pending start is emitted as incomplete (reason
      ``end_of_stream``) and counted (``pending_at_end``).

    So every start becomes exactly one pair or incomplete, or is counted as
    ``pending_limit``. ``emit_incomplete=False`` only counts incompletes.
    Errors: an event without the key or time field fails the stage with a
    one-line message naming the field.
    """

    def __init__(
        self,
        start: type[S] | Callable[[Any], bool],
        complete: type[C] | Callable[[Any], bool],
        *,
        key: KeySpec,
        complete_key: KeySpec | None = None,
        time_field: str | None = "ts",
        timeout: float | None = 10.0,
        max_pending: int = DEFAULT_MAX_KEYS,
        on_repeat: str = "replace",
        emit_incomplete: bool = True,
        name: str = "",
    ) -> None:
        self.name = name or "join"
        positive(timeout, f"{self.name}: timeout")
        positive(max_pending, f"{self.name}: max_pending")
        if on_repeat not in REPEAT_POLICIES:
            raise PipelineDefinitionError(
                f"{self.name}: on_repeat={on_repeat!r}; use 'replace' or 'keep'"
            )
        self.is_start = _matcher(start, "start")
        self.is_complete = _matcher(complete, "complete")
        self.start, self.complete = start, complete
        self.start_key = KeyGetter.of(key, self.name)
        self.complete_key = (
            KeyGetter.of(complete_key, self.name) if complete_key else self.start_key
        )
        self.time = ValueGetter.of(time_field, self.name) if time_field else None
        self.timeout = timeout
        self.max_pending = max_pending
        self.keep_first = on_repeat == "keep"
        self.emit_incomplete = emit_incomplete
        self.tick_interval = min(timeout, 1.0) if timeout is not None else None

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._pending: OrderedDict[Hashable, tuple[S, float]] = OrderedDict()

    def reads_fields(self) -> tuple[str, ...]:
        """The start and complete key fields and the timestamp field (a key
        function or a predicate reads what it reads: not listed)."""
        time = (self.time.name,) if self.time is not None else ()
        return tuple(dict.fromkeys((*self.start_key.fields, *self.complete_key.fields, *time)))

    def output_type(self, input_type: type | None) -> type | None:
        """Unknown: pairs mixed with the events that are neither start nor complete."""
        return None

    def kernel_form(self) -> KernelForm | UserOnly:
        """Starts and completes given as event types, keyed and timed by
        fields, without incomplete records: a join the kernel can do."""
        start, complete = self.start, self.complete
        if not isinstance(start, type) or not isinstance(complete, type):
            return UserOnly("its start or complete is a Python function; give event types")
        if self.time is None or self.time.field is None:
            return UserOnly("it times by arrival (time_field=None)")
        if self.emit_incomplete:
            return UserOnly(
                "it emits incomplete starts (emit_incomplete=True);"
                " with emit_incomplete=False it runs in the kernel"
            )
        if not self.start_key.fields or not self.complete_key.fields:
            return UserOnly("its key is a Python function")
        as_dict = self.start_key.as_dict

        def pair(key: Any, begun: Any, done: Any, latency: int) -> JoinPair[Any, Any]:
            return JoinPair(key=as_dict(key), start=begun, complete=done, latency_ns=latency)

        return JoinForm(
            start,
            complete,
            self.start_key.fields,
            self.complete_key.fields,
            self.time.field,
            self.timeout,
            self.max_pending,
            self.keep_first,
            pair,
        )

    @property
    def pending(self) -> int:
        """How many starts are waiting for their complete."""
        return len(self._pending)

    def process(self, batch: list[Any]) -> Sequence[Any]:
        now = self.ctx.clock.now()
        out: list[Any] = self._expire(now)
        try:
            out += self._join(batch, now)
        except AttributeError as exc:
            if self.time is not None and exc.name == self.time.name:
                raise PipelineDefinitionError(
                    f"{self.name}: event {type(exc.obj).__name__} has no timestamp field"
                    f" {exc.name!r}: pass time_field=<its nanosecond timestamp field>,"
                    " or time_field=None to time by arrival"
                ) from exc
            raise missing_field(exc, self.name) from exc
        return out

    def _join(self, batch: list[Any], now: float) -> list[Any]:
        """Pairs, incompletes and passed-through events of ``batch``, in input order."""
        out: list[Any] = []
        pending = self._pending
        start_key, complete_key = self.start_key.get, self.complete_key.get
        as_dict = self.start_key.as_dict
        stamp = self.time.get if self.time is not None else None
        repeated = full = unmatched = 0
        flags = zip(batch, self.is_start(batch), self.is_complete(batch), strict=True)
        for event, starts, completes in flags:
            if starts:
                key = start_key(event)
                if key in pending:
                    repeated += 1
                    if self.keep_first:
                        self._incomplete(out, key, event, "repeated", 0.0)
                        continue
                    old, since = pending.pop(key)
                    self._incomplete(out, key, old, "replaced", now - since)
                    pending[key] = (event, now)
                elif len(pending) < self.max_pending:
                    pending[key] = (event, now)
                else:
                    full += 1
            elif completes:
                key = complete_key(event)
                entry = pending.pop(key, None)
                if entry is None:
                    unmatched += 1
                    continue
                begun, since = entry
                latency = stamp(event) - stamp(begun) if stamp else round((now - since) * 1e9)
                out.append(
                    JoinPair(
                        key=as_dict(key),
                        start=begun,
                        complete=event,
                        latency_ns=latency,
                    )
                )
            else:
                out.append(event)
        drop = self.ctx.stats.drop
        drop("start_repeated" if self.keep_first else "start_replaced", repeated)
        drop("pending_limit", full)
        drop("complete_without_start", unmatched)
        return out

    def _incomplete(
        self, out: list[Any], key: Hashable, start: Any, why: str, waited: float
    ) -> None:
        if self.emit_incomplete:
            out.append(
                JoinIncomplete(
                    key=self.start_key.as_dict(key), start=start, reason=why, waited=waited
                )
            )

    def _expire(self, now: float) -> list[Any]:
        pending = self._pending
        out: list[Any] = []
        if self.timeout is None or not pending:
            return out
        due = now - self.timeout
        expired = 0
        while pending:
            key, (start, since) = next(iter(pending.items()))
            if since > due:
                break
            del pending[key]
            expired += 1
            self._incomplete(out, key, start, "timeout", now - since)
        self.ctx.stats.drop("expired", expired)
        return out

    def tick(self) -> Sequence[Any]:
        return self._expire(self.ctx.clock.now())

    def finish(self) -> Sequence[Any]:
        now = self.ctx.clock.now()
        out = self._expire(now)
        self.ctx.stats.drop("pending_at_end", len(self._pending))
        for key, (start, since) in self._pending.items():
            self._incomplete(out, key, start, "end_of_stream", now - since)
        self._pending.clear()
        return out


def join(
    start: type[S] | Callable[[Any], bool],
    complete: type[C] | Callable[[Any], bool],
    *,
    key: KeySpec,
    complete_key: KeySpec | None = None,
    time_field: str | None = "ts",
    timeout: float | None = 10.0,
    max_pending: int = DEFAULT_MAX_KEYS,
    on_repeat: str = "replace",
    emit_incomplete: bool = True,
    name: str = "",
) -> Join[S, C]:
    """Pair start and complete events by key, with their latency.

    ``join(BlockIssue, BlockComplete, key=("dev", "sector"))`` (event types),
    or predicates: ``join(lambda e: e.phase == 0, lambda e: e.phase == 1,
    key="tid")``. ``complete_key`` when the complete names the key
    differently. See :class:`Join` for bounds, expiry, the repeated-start
    policy and end of stream.
    """
    return Join(
        start,
        complete,
        key=key,
        complete_key=complete_key,
        time_field=time_field,
        timeout=timeout,
        max_pending=max_pending,
        on_repeat=on_repeat,
        emit_incomplete=emit_incomplete,
        name=name,
    )
