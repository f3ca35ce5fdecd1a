"""Sinks named on the command line: ``--sink NAME[:ARGUMENT]``.

``NAME`` is looked up in the ``flowtrace.sinks`` entry-point group, so an
installed third-party package adds sinks by declaring one::

    [project.entry-points."flowtrace.sinks"]
    mysink = "mypackage.sink:MySink"

The entry point is a class or factory with a ``from_spec(argument: str)``
classmethod/function returning the sink (:class:`SinkFactory`); it raises
:class:`SinkSpecError` (or ``ValueError``) for an argument it cannot use,
with a message naming the problem and the fix. The entry points are the one
registry: flowtrace's own sinks are found through them too.

:func:`with_sinks` adds sinks to a pipeline through a
:class:`~flowtrace.fanout.TeeSink`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from .errors import FlowtraceError
from .fanout import TeeSink
from .stages import Pipeline, Sink

__all__ = [
    "SinkFactory",
    "SinkSpecError",
    "parse_options",
    "parse_seconds",
    "parse_size",
    "sink_from_spec",
    "with_sinks",
]

GROUP = "flowtrace.sinks"


class SinkSpecError(FlowtraceError):
    """A ``--sink`` specification names no known sink or has a bad argument."""


@runtime_checkable
class SinkFactory(Protocol):
    """What a ``flowtrace.sinks`` entry point names: something that builds
    its sink from the text after ``NAME:``."""

    def from_spec(self, argument: str) -> Sink[Any]: ...


def _available() -> dict[str, Callable[[], Any]]:
    return {ep.name: ep.load for ep in entry_points(group=GROUP)}


def sink_from_spec(spec: str) -> Sink[Any]:
    """The sink ``NAME[:ARGUMENT]`` describes; raises :class:`SinkSpecError`."""
    name, _, argument = spec.partition(":")
    available = _available()
    if name not in available:
        known = ", ".join(sorted(available))
        raise SinkSpecError(
            f"--sink {spec}: no sink named {name!r}; known sinks: {known} "
            f"(packages add sinks in the {GROUP!r} entry-point group)"
        )
    try:
        factory = available[name]()
    except Exception as exc:
        raise SinkSpecError(
            f"--sink {spec}: sink {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(factory, SinkFactory):
        raise SinkSpecError(
            f"--sink {spec}: sink {name!r} cannot be built from the command line "
            "(it has no from_spec); use it in the pipeline file instead"
        )
    try:
        sink = factory.from_spec(argument)
    except SinkSpecError as exc:
        raise SinkSpecError(f"--sink {spec}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise SinkSpecError(f"--sink {spec}: {exc}") from None
    if not isinstance(sink, Sink):
        raise SinkSpecError(f"--sink {spec}: {name}.from_spec returned {type(sink).__name__}")
    return sink


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``64k``, ``10M`` or ``1G`` (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit() or int(digits) <= 0:
        raise SinkSpecError(f"bad size {text!r}: write a positive number of bytes, e.g. 10M")
    return int(digits) * scale


def parse_seconds(text: str) -> float:
    """A sink option in seconds: a positive finite number (not nan or inf)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return seconds


def parse_options(parts: Sequence[str], allowed: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """``key=value`` parts into a dict, each value converted by ``allowed[key]``."""
    options: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            choices = ", ".join(f"{k}=..." for k in allowed) or "none"
            raise SinkSpecError(f"unknown option {part!r}; options: {choices}")
        try:
            options[key] = allowed[key](value)
        except ValueError as exc:
            raise SinkSpecError(f"bad value for {key}: {exc}") from None
    return options


def with_sinks(pipeline: Pipeline, sinks: Sequence[Sink[Any]]) -> Pipeline:
    """A new pipeline writing to its own sink and to ``sinks`` (through a
    :class:`~flowtrace.fanout.TeeSink`)."""
    if not sinks:
        return pipeline
    return pipeline.replace(sink=TeeSink([pipeline.sink, *sinks]))
