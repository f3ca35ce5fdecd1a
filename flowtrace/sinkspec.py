"""Sinks named on the command line: ``--sink NAME[:ARGUMENT]``.

``NAME`` is looked up in the ``flowtrace.sinks`` entry-point group, so an
installed third-party package adds sinks by declaring one::

    [project.entry-points."flowtrace.sinks"]
    mysink = "mypackage.sink:MySink"

The entry point is a class or factory with a ``from_spec(argument: str)``
classmethod/function returning the sink; it raises :class:`SinkSpecError`
(or ``ValueError``) for an argument it cannot use, with a message naming the
problem and the fix. flowtrace's own sinks (``ndjson``, ``socket``,
``metrics``) are found even where the entry points are not installed.

:func:`with_sinks` adds sinks to a pipeline through a
:class:`~flowtrace.sinks.tee.TeeSink`; :func:`bind_pipeline_stats` hands the
pipeline's counters to sinks that report them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .errors import FlowtraceError
from .pipeline import Pipeline
from .stages import Sink

__all__ = [
    "SinkSpecError",
    "bind_pipeline_stats",
    "parse_options",
    "parse_size",
    "sink_from_spec",
    "with_sinks",
]

GROUP = "flowtrace.sinks"
_BUILTIN = {
    "ndjson": "flowtrace.sinks.ndjson:NdjsonSink",
    "socket": "flowtrace.sinks.socket:SocketSink",
    "metrics": "flowtrace.sinks.metrics:MetricsSink",
}

T = TypeVar("T")


class SinkSpecError(FlowtraceError):
    """A ``--sink`` specification names no known sink or has a bad argument."""


def _available() -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {}
    for name, target in _BUILTIN.items():
        found[name] = functools.partial(_import, target)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.load
    return found


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


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
    from_spec = getattr(factory, "from_spec", None)
    if from_spec is None:
        raise SinkSpecError(
            f"--sink {spec}: sink {name!r} cannot be built from the command line "
            "(it has no from_spec); use it in the pipeline file instead"
        )
    try:
        sink = from_spec(argument)
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


def bind_pipeline_stats(pipeline: Pipeline) -> Pipeline:
    """Hand ``pipeline.stats`` to its source and sink where they use them
    (sinks that report the pipeline's counters, a replay source pacing a
    virtual clock; see :class:`~flowtrace.sinks.reporting.PipelineBound`).
    Call it on the pipeline you run, after the last ``Pipeline.replace``;
    returns the pipeline."""
    for stage in (pipeline.source, pipeline.sink):
        bind = getattr(stage, "bind_pipeline", None)
        if callable(bind):
            bind(pipeline.stats)
    return pipeline


def with_sinks(pipeline: Pipeline, sinks: Sequence[Sink[Any]]) -> Pipeline:
    """A new pipeline writing to its own sink and to ``sinks`` (through a
    :class:`~flowtrace.sinks.tee.TeeSink`), with the counters bound."""
    if not sinks:
        return bind_pipeline_stats(pipeline)
    from .sinks.tee import TeeSink

    return bind_pipeline_stats(pipeline.replace(sink=TeeSink([pipeline.sink, *sinks])))
