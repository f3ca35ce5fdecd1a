"""A running count per key, attached to each event with the gap to the
previous event of its key: what the tutorial's sync_count keeps in a BPF
hash (the time of the last sync, and the syncs seen so far).

``running_count()`` passes every event on as an event of the same type with
two fields more (a subclass, so everything that reads the event still
does): ``seq``, how many events of its key it has seen, this one included
(1 for a key's first event), and ``gap``, this event's ``time`` field minus
that of the previous event of its key (0 for the first), in the field's
unit (nanoseconds for ``ts``)::

    syscall_entry("sync") | running_count() | filter((F.seq > 1) & (F.gap < 10**9))

It has an in-kernel form (:class:`~flowtrace.kernel_forms.RunningForm`,
compiled by :mod:`flowtrace.kernel_running`), so after a kernel source it
runs in the BPF program and a filter after it too.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from operator import attrgetter
from typing import Any, cast

import msgspec

from ..context import StageContext
from ..errors import PipelineDefinitionError
from ..kernel_forms import KernelForm, RunningForm, UserOnly
from ..ktypes import s64, u64
from ..stages import Operator
from ._fields import KeyGetter, KeySpec, missing_field, positive_int
from .windows import DEFAULT_MAX_KEYS

__all__ = ["GAP", "SEQ", "RunningCount", "running_count", "running_type"]

SEQ = "seq"
GAP = "gap"
_S64 = 1 << 63
_U64 = 1 << 64


def running_type(event: type[Any]) -> type[Any]:
    """``event`` with the fields ``seq`` (u64) and ``gap`` (s64) added at
    its end: a subclass, made once per event type. Raises
    :class:`~flowtrace.errors.PipelineDefinitionError` for an event type
    that is not a ``msgspec.Struct`` or already has either field."""
    fields = getattr(event, "__struct_fields__", None)
    if fields is None:
        raise PipelineDefinitionError(
            f"running_count: {event.__name__} is not an event type (a msgspec Struct);"
            " it passes events on with fields added"
        )
    clash = [name for name in (SEQ, GAP) if name in fields]
    if clash:
        raise PipelineDefinitionError(
            f"running_count: {event.__name__} already has a field {clash[0]!r},"
            " which running_count adds; map the event to one without it first"
        )
    return _subclass(cast(Any, event))  # a class is hashable; typeshed says otherwise


@functools.cache
def _subclass(event: Any) -> type[Any]:
    made: type[Any] = msgspec.defstruct(
        f"{event.__name__}Running", [(SEQ, u64), (GAP, s64)], bases=(event,), module=__name__
    )
    return made


def _as_s64(value: int) -> int:
    """``value`` as the kernel's s64 holds it (wrapping at 64 bits)."""
    return value if -_S64 <= value < _S64 else (value + _S64) % _U64 - _S64


class RunningCount(Operator[Any, Any]):
    """Numbers each event within its key and adds the gap to the previous
    event of that key (see the module docstring for the fields).

    Keeps per key the events seen and the last ``time`` value, for at most
    ``max_keys`` keys (the whole stream is one key without ``by``); it never
    forgets a key. An event of a new key when ``max_keys`` are kept is
    dropped and counted (``key_limit``), as the kernel counts an update its
    full map refuses. Emits each event at once, in order; holds no events.
    The gap wraps at 64 bits as the kernel's signed 64-bit value does.
    Side records from upstream go on ahead of the batch's results, never
    numbered. End of stream: nothing is held, nothing more is emitted.
    Errors: an event without the key or time field fails the stage with a
    one-line message naming the field; an event type that already has a
    ``seq`` or ``gap`` field raises
    :class:`~flowtrace.errors.PipelineDefinitionError`.

    In the kernel the state is a BPF hash (an array without ``by``) updated
    with atomic instructions: events of one key on two CPUs at the same
    instant take their numbers and gaps in the order they reach the map,
    which can differ from the order of their times by that instant (the gap
    is signed so that shows; the second event of a new key that overtakes
    the first has gap 0, as the first has).
    """

    holds_events = False

    def __init__(
        self,
        by: KeySpec | None = None,
        *,
        time: str = "ts",
        max_keys: int = DEFAULT_MAX_KEYS,
        name: str = "",
    ) -> None:
        self.key = KeyGetter.of(by, "running_count") if by is not None else None
        if not isinstance(time, str) or not time.isidentifier():
            raise PipelineDefinitionError(f"running_count: time must be a field name, got {time!r}")
        self.time = time
        self.max_keys = positive_int(max_keys, "running_count: max_keys")
        self.name = name or "running_count"

    def reads_fields(self) -> tuple[str, ...]:
        return (*(self.key.fields if self.key is not None else ()), self.time)

    def output_type(self, input_type: type[Any] | None) -> type[Any] | None:
        return None if input_type is None else running_type(input_type)

    def kernel_form(self) -> KernelForm | UserOnly:
        if self.key is not None and not self.key.fields:
            return UserOnly("its key is a Python function")
        key = self.key.fields if self.key is not None else ()
        return RunningForm(key, self.time, self.max_keys, running_type)

    def open(self, ctx: StageContext) -> None:
        super().open(ctx)
        self._state: dict[Hashable, tuple[int, int]] = {}  # key -> (events seen, last time)
        self._types: dict[type[Any], type[Any]] = {}  # input type -> output type

    def process(self, batch: list[Any]) -> Sequence[Any]:
        state, types, out, refused = self._state, self._types, [], 0
        key_of = self.key.get if self.key is not None else None
        time_of = attrgetter(self.time)
        astuple = msgspec.structs.astuple
        try:
            for event in batch:
                key = key_of(event) if key_of is not None else None
                now = time_of(event)
                seen = state.get(key)
                if seen is None:
                    if len(state) >= self.max_keys:
                        refused += 1
                        continue
                    seq, gap = 1, 0
                else:
                    seq, gap = seen[0] + 1, _as_s64(now - seen[1])
                state[key] = (seq, now)
                made = types.get(type(event)) or types.setdefault(
                    type(event), running_type(type(event))
                )
                out.append(made(*astuple(event), seq, gap))
        except AttributeError as exc:
            raise missing_field(exc, self.stage_name()) from exc
        if refused:
            self.ctx.stats.drop("key_limit", refused)
        return out


def running_count(
    by: KeySpec | None = None,
    *,
    time: str = "ts",
    max_keys: int = DEFAULT_MAX_KEYS,
    name: str = "",
) -> RunningCount:
    """Each event with ``seq`` (its number within its key, from 1) and
    ``gap`` (its ``time`` minus the previous one's of its key, 0 for the
    first). See :class:`RunningCount`."""
    return RunningCount(by, time=time, max_keys=max_keys, name=name)
