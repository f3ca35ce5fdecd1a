"""Reading fields and keys off events, shared by every operator.

A *value* is a field name or a function of the event; a *key* is a field
name, several field names, or a function. Both compile once to a fast getter
(``operator.attrgetter`` for fields), so per-event work stays in C where it
can. A key's values are also turned back into a structured mapping (field
name -> value) for result records, never a joined string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from ..errors import PipelineDefinitionError
from ..kernel_forms import KernelForm, UserOnly

__all__ = [
    "KeyGetter",
    "KeySpec",
    "OpaqueFunction",
    "PassesEvents",
    "ValueGetter",
    "ValueSpec",
    "missing_field",
    "positive",
    "positive_int",
]

ValueSpec = str | Callable[[Any], Any]
"""A field name, or a function computing the value from an event."""

KeySpec = str | Sequence[str] | Callable[[Any], Hashable]
"""A field name, several field names, or a function computing the key."""


def _callable_name(fn: Callable[..., Any], default: str) -> str:
    name = getattr(fn, "__name__", "")
    return name if name and name.isidentifier() else default


@dataclass(frozen=True)
class ValueGetter:
    """A compiled value spec: ``get(event)`` and the name used in records."""

    get: Callable[[Any], Any]
    name: str
    field: str | None  # the field name when the spec is a plain field

    @classmethod
    def of(cls, spec: ValueSpec, what: str) -> ValueGetter:
        if isinstance(spec, str):
            if not spec.isidentifier():
                raise PipelineDefinitionError(
                    f"{what}: {spec!r} is not a field name; pass a field name or a function"
                )
            return cls(attrgetter(spec), spec, spec)
        if callable(spec):
            return cls(spec, _callable_name(spec, "value"), None)
        raise PipelineDefinitionError(
            f"{what}: expected a field name or a function, got {type(spec).__name__}"
        )


@dataclass(frozen=True)
class KeyGetter:
    """A compiled key spec.

    ``get(event)`` returns the key: the field's value for one field, a tuple
    for several, the function's result otherwise. ``as_dict(key)`` gives the
    structured form used in records; ``names`` are its field names.
    """

    get: Callable[[Any], Hashable]
    names: tuple[str, ...]
    fields: tuple[str, ...]  # empty when the key is computed by a function

    @classmethod
    def of(cls, spec: KeySpec, what: str) -> KeyGetter:
        if isinstance(spec, str):
            spec = (spec,)
        if callable(spec):
            name = _callable_name(spec, "key")
            return cls(spec, (name,), ())
        names = tuple(spec) if isinstance(spec, Iterable) else ()
        if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise PipelineDefinitionError(
                f"{what}: a key is a field name, a list of field names, or a function; got {spec!r}"
            )
        if len(set(names)) != len(names):
            raise PipelineDefinitionError(f"{what}: key fields {names!r} repeat a field")
        return cls(attrgetter(*names), names, names)

    def as_dict(self, key: Any) -> dict[str, Any]:
        if len(self.names) == 1:
            return {self.names[0]: key}
        return dict(zip(self.names, key, strict=True))


def missing_field(exc: AttributeError, what: str) -> Exception:
    """A one-line error for an event lacking a field an operator reads.

    Returns ``exc`` itself when it is not about an event's field (an
    attribute error inside a user's function on something else).
    """
    event = getattr(exc, "obj", None)
    fields = getattr(type(event), "__struct_fields__", None)
    if fields is None or not exc.name:
        return exc
    return PipelineDefinitionError(
        f"{what}: event {type(event).__name__} has no field {exc.name!r};"
        f" its fields are {', '.join(fields) or '(none)'}"
    )


def positive(value: float | None, what: str, *, allow_none: bool = True) -> None:
    """Reject sizes, intervals and limits that are not positive finite
    numbers (nan and infinity too) with a one-line error."""
    if value is None:
        if not allow_none:
            raise PipelineDefinitionError(f"{what} is required")
        return
    if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise PipelineDefinitionError(f"{what} must be a positive number, got {value!r}")


def positive_int(value: object, what: str, *, allow_zero: bool = False) -> int:
    """``value`` if it is a positive integer (or zero, with ``allow_zero``),
    else a one-line error; ``bool`` is not an integer here. For counts,
    divisors, slot indexes and item limits."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise PipelineDefinitionError(f"{what} must be {kind}, got {value!r}")
    return value


class PassesEvents:
    """Declarations of an operator that emits some of its input events
    unchanged (filter, sample, distinct, throttle)."""

    def reads_fields(self) -> tuple[str, ...]:
        """The event fields it reads: none unless it says otherwise."""
        return ()

    def output_type(self, input_type: type | None) -> type | None:
        """Events pass unchanged: the input's type."""
        return input_type


class OpaqueFunction:
    """Declarations of an operator whose work is a user's function (map,
    per_event, ...): what it reads and returns is not known."""

    def reads_fields(self) -> tuple[str, ...]:
        """Unknown: a function reads what it reads."""
        return ()

    def output_type(self, input_type: type | None) -> type | None:
        """Unknown: whatever the function returns."""
        return None

    def kernel_form(self) -> KernelForm | UserOnly:
        """None: a Python function runs in Python."""
        return UserOnly("a Python function")
