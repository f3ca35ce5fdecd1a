"""What an operator can become inside a BPF program, as plain descriptions.

An operator with an in-kernel form returns one from ``kernel_form()``: a
:class:`FilterForm` (a tree of field comparisons), an
:class:`AggregateForm` ("count by these fields", "log2 of this field divided
by N, keyed by these fields", per tumbling window) or a :class:`JoinForm`
(start/complete by key) or a :class:`RunningForm` (a running count and
gap per key, written with each event). Anything else returns :class:`UserOnly` saying why
it stays in Python. There is no C here and none in the operators: the
planner (:mod:`flowtrace.placement`) checks a form against the record the
kernel fills, and :mod:`flowtrace.kernel_chain` generates the C for it.

A form also carries what user space needs to turn what the kernel kept into
the operator's own records (``records``, ``pair``), so the records that come
out of the kernel are built by the operator's code, exactly as in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AGGREGATES",
    "COMPARISONS",
    "AggregateForm",
    "AggregateKind",
    "Comparison",
    "Condition",
    "Every",
    "FilterForm",
    "JoinForm",
    "KernelForm",
    "Negation",
    "Place",
    "Placement",
    "RunningForm",
    "Some",
    "UserOnly",
]

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "startswith")
"""The comparisons a :class:`Comparison` may make."""

AGGREGATES = ("count_by", "count", "rate", "sum", "min", "max", "log2", "linear")
"""The aggregates an :class:`AggregateForm` may name."""


@dataclass(frozen=True)
class Comparison:
    """``event.<field> <op> value``: ``op`` one of :data:`COMPARISONS`; for
    ``in``/``not in`` ``value`` is a frozenset, for ``startswith`` a str."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Every:
    """True when every part is (empty: true)."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Some:
    """True when some part is (empty: false)."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Negation:
    """True when ``part`` is false."""

    part: Condition


Condition = Comparison | Every | Some | Negation
"""A predicate tree over an event's fields."""


@dataclass(frozen=True)
class FilterForm:
    """Keep the events ``condition`` holds for; the rest are not written,
    counted or joined."""

    condition: Condition


@dataclass(frozen=True)
class AggregateKind:
    """What an aggregate computes, for its window to make an
    :class:`AggregateForm` of (see there for the fields)."""

    aggregate: str
    value: str | None = None
    key: tuple[str, ...] = ()
    divisor: int = 1
    max_index: int = 0
    max_keys: int | None = None
    """Keys a count by key holds (its own bound, not the window's)."""


@dataclass(frozen=True)
class AggregateForm:
    """One aggregate per window (and key), kept in BPF maps.

    ``aggregate`` is one of :data:`AGGREGATES`: ``count_by`` counts events by
    the fields ``key``; the others compute one value per window and, when
    ``key`` is given, per key of those fields. ``value`` is the field
    aggregated (sum, min, max, histograms); histograms take
    ``(u64)value / divisor``, a linear one slots ``0..max_index``. At most
    ``max_keys`` keys per window. ``every``: tumbling processing-time
    windows of that many seconds (None: the whole stream); ``limit``: stop
    after that many windows.

    ``records(accs, start, end)`` builds the operator's records for one
    window from what the kernel counted, in the shapes the operator's own
    aggregate accumulates: for ``count_by`` a Counter of keys (a value for
    one field, a tuple for several) in order of first appearance; with a
    ``key`` otherwise, a dict of such keys to accumulators in that order;
    without, one accumulator: 65 slot counts then the values' sum in one
    list (log2), a Counter of slots (linear), an int (count, rate, sum), an
    int or None (min, max).
    """

    aggregate: str
    value: str | None
    key: tuple[str, ...]
    max_keys: int
    records: Callable[[Any, float, float], list[Any]]
    divisor: int = 1
    max_index: int = 0
    every: float | None = None
    limit: int | None = None


@dataclass(frozen=True)
class JoinForm:
    """Pair each complete event with the pending start of the same key.

    Starts are events of type ``start``, completes of type ``complete``;
    their keys are the fields ``start_key`` and ``complete_key`` (in the
    same order), their times ``time_field`` (nanoseconds). At most
    ``max_pending`` starts wait; a start pending ``timeout`` seconds or more
    when its complete arrives has expired. ``keep_first``: a repeated start
    leaves the first in place (else it replaces it). ``pair(key, start,
    complete, latency_ns)`` builds the operator's record for a pair that
    leaves the kernel (``key`` a value for one field, a tuple for several).
    """

    start: type[Any]
    complete: type[Any]
    start_key: tuple[str, ...]
    complete_key: tuple[str, ...]
    time_field: str
    timeout: float | None
    max_pending: int
    keep_first: bool
    pair: Callable[[Any, Any, Any, int], Any]


@dataclass(frozen=True)
class RunningForm:
    """Pass each event on with two fields added: ``seq``, the events of its
    key so far (this one included), and ``gap``, its ``time`` field minus
    the previous one's of that key (0 for a key's first event). Keys are
    the fields ``key`` (none: the whole stream is one key); at most
    ``max_keys`` are kept, and an event of a further key is dropped
    (``key_limit``). ``output_type(event_type)`` is the type of the events
    that come out (the input type with the two fields at its end)."""

    key: tuple[str, ...]
    time: str
    max_keys: int
    output_type: Callable[[type[Any]], type[Any]]


@dataclass(frozen=True)
class UserOnly:
    """No in-kernel form: the operator runs in user space, for the reason ``why``."""

    why: str


KernelForm = FilterForm | AggregateForm | JoinForm | RunningForm
"""What an operator can be in the kernel."""


@dataclass(frozen=True)
class Place:
    """Where one stage runs (``"kernel"`` or ``"user"``) and why."""

    stage: str
    where: str
    why: str


@dataclass(frozen=True)
class Placement:
    """Where a source and its operators run: ``places`` for the source and
    each operator in order; ``source`` is what a run starts (a kernel source
    whose program also runs the first ``in_kernel`` operators)."""

    places: tuple[Place, ...]
    source: Any
    in_kernel: int
