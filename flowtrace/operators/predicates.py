"""Field predicates as data: ``F.pid == 42``, ``F.comm.isin({"bash", "sh"})``.

A predicate is a small tree of comparisons between one event field and a
constant, combined with ``&``, ``|`` and ``~``. Because it is data (field,
operator, value) and not an opaque function, a later step can compile it
into the BPF program's C text and filter in the kernel; in Python it
evaluates with the same meaning. Every predicate is also a plain callable
``predicate(event) -> bool``, so it works wherever a function does.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from ..errors import PipelineDefinitionError
from ..kernel_forms import Comparison, Condition, Every, Negation, Some

__all__ = ["AllOf", "AnyOf", "Compare", "F", "Not", "Predicate", "field"]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": _op.eq,
    "!=": _op.ne,
    "<": _op.lt,
    "<=": _op.le,
    ">": _op.gt,
    ">=": _op.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
    "startswith": lambda a, b: a.startswith(b),
}


class Predicate:
    """Base of predicate trees; call it on an event, or ``select`` a batch."""

    __slots__ = ()

    def __call__(self, event: Any) -> bool:
        raise NotImplementedError

    def select(self, batch: list[Any]) -> list[Any]:
        """The events of ``batch`` the predicate holds for, in order."""
        test = self.__call__
        return [e for e in batch if test(e)]

    def fields(self) -> tuple[str, ...]:
        """The fields the predicate names, each once, in order of first appearance."""
        raise NotImplementedError

    def kernel_condition(self) -> Condition:
        """The same predicate as a plain tree, for the kernel (see
        :mod:`flowtrace.kernel_forms`)."""
        raise NotImplementedError

    def __and__(self, other: Predicate) -> AllOf:
        return AllOf((*_parts(self, AllOf), *_parts(_check(other), AllOf)))

    def __or__(self, other: Predicate) -> AnyOf:
        return AnyOf((*_parts(self, AnyOf), *_parts(_check(other), AnyOf)))

    def __invert__(self) -> Predicate:
        return Not(self)


def _check(other: object) -> Predicate:
    if not isinstance(other, Predicate):
        raise PipelineDefinitionError(
            f"cannot combine a field predicate with {type(other).__name__}:"
            " combine predicates such as F.pid == 1, or write one function"
        )
    return other


def _fields_of(parts: tuple[Predicate, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for p in parts for f in p.fields()))


def _parts(p: Predicate, kind: type[AllOf] | type[AnyOf]) -> tuple[Predicate, ...]:
    return p.parts if isinstance(p, kind) else (p,)


class Compare(Predicate):
    """``event.<field> <op> value``; ``op`` is one of ==, !=, <, <=, >, >=,
    in, not in (for in/not in, ``value`` is a frozenset), startswith (a
    string field starting with the string ``value``)."""

    __slots__ = ("_cmp", "_get", "field", "op", "value")

    def __init__(self, field: str, op: str, value: Any) -> None:
        if op not in _COMPARE:
            raise PipelineDefinitionError(
                f"unknown comparison {op!r}: use one of {', '.join(_COMPARE)}"
            )
        self.field = field
        self.op = op
        self.value = value
        self._get = attrgetter(field)
        self._cmp = _COMPARE[op]

    def __call__(self, event: Any) -> bool:
        return bool(self._cmp(self._get(event), self.value))

    def select(self, batch: list[Any]) -> list[Any]:
        get, value = self._get, self.value
        # the common comparisons as their own comprehension: no call per event
        # beyond the C-level getter
        if self.op == "==":
            return [e for e in batch if get(e) == value]
        if self.op == "in":
            return [e for e in batch if get(e) in value]
        cmp = self._cmp
        return [e for e in batch if cmp(get(e), value)]

    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def kernel_condition(self) -> Condition:
        return Comparison(self.field, self.op, self.value)

    def __repr__(self) -> str:
        value = sorted(self.value, key=repr) if self.op in ("in", "not in") else self.value
        if self.op == "startswith":
            return f"F.{self.field}.startswith({value!r})"
        return f"F.{self.field} {self.op} {value!r}"


@dataclass(frozen=True, eq=False)
class AllOf(Predicate):
    """True when every part is (an empty ``AllOf`` is true)."""

    parts: tuple[Predicate, ...]

    def __call__(self, event: Any) -> bool:
        return all(p(event) for p in self.parts)

    def select(self, batch: list[Any]) -> list[Any]:
        for p in self.parts:
            batch = p.select(batch)
        return batch

    def fields(self) -> tuple[str, ...]:
        return _fields_of(self.parts)

    def kernel_condition(self) -> Condition:
        return Every(tuple(p.kernel_condition() for p in self.parts))

    def __repr__(self) -> str:
        return " & ".join(f"({p!r})" for p in self.parts) or "AllOf(())"


@dataclass(frozen=True, eq=False)
class AnyOf(Predicate):
    """True when some part is (an empty ``AnyOf`` is false)."""

    parts: tuple[Predicate, ...]

    def __call__(self, event: Any) -> bool:
        return any(p(event) for p in self.parts)

    def fields(self) -> tuple[str, ...]:
        return _fields_of(self.parts)

    def kernel_condition(self) -> Condition:
        return Some(tuple(p.kernel_condition() for p in self.parts))

    def __repr__(self) -> str:
        return " | ".join(f"({p!r})" for p in self.parts) or "AnyOf(())"


@dataclass(frozen=True, eq=False)
class Not(Predicate):
    """True when ``part`` is false."""

    part: Predicate

    def __call__(self, event: Any) -> bool:
        return not self.part(event)

    def fields(self) -> tuple[str, ...]:
        return self.part.fields()

    def kernel_condition(self) -> Condition:
        return Negation(self.part.kernel_condition())

    def __repr__(self) -> str:
        return f"~({self.part!r})"


class FieldRef:
    """One event field, compared to constants to build a :class:`Compare`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not name.isidentifier():
            raise PipelineDefinitionError(f"{name!r} is not a field name")
        self.name = name

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(self.name, "==", value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(self.name, "!=", value)

    def __lt__(self, value: object) -> Compare:
        return Compare(self.name, "<", value)

    def __le__(self, value: object) -> Compare:
        return Compare(self.name, "<=", value)

    def __gt__(self, value: object) -> Compare:
        return Compare(self.name, ">", value)

    def __ge__(self, value: object) -> Compare:
        return Compare(self.name, ">=", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[Any]) -> Compare:
        """``event.<field> in values`` (values are frozen into a set)."""
        return Compare(self.name, "in", frozenset(values))

    def notin(self, values: Iterable[Any]) -> Compare:
        """``event.<field> not in values``."""
        return Compare(self.name, "not in", frozenset(values))

    def startswith(self, prefix: str) -> Compare:
        """``event.<field>.startswith(prefix)``, for string fields."""
        if not isinstance(prefix, str):
            raise PipelineDefinitionError(
                f"F.{self.name}.startswith takes a string, got {type(prefix).__name__}"
            )
        return Compare(self.name, "startswith", prefix)


def field(name: str) -> FieldRef:
    """The event field ``name``, for building predicates: ``field("pid") == 42``."""
    return FieldRef(name)


class _Fields:
    """``F.pid`` is ``field("pid")``."""

    def __getattr__(self, name: str) -> FieldRef:
        if name.startswith("__"):
            raise AttributeError(name)
        return FieldRef(name)


F = _Fields()
"""Shorthand for fields in predicates: ``F.pid == 42``, ``F.comm.isin({"sh"})``."""
