"""Where a run's results go on the command line: ``-o text`` (the
pipeline's own sinks), ``-o ndjson`` (NDJSON records on standard output),
``--live`` (a view redrawn in place), and ``--quiet`` (results only).

Only sinks that print text for people on standard output
(:meth:`~flowtrace.stages.Sink.prints_text`, the console sink) are
replaced; files, sockets and metrics a pipeline writes stay as they are.
A pipeline without such a sink gets the new output added beside its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .fanout import TeeSink
from .sinkspec import sink_from_spec
from .stages import Pipeline, Sink

__all__ = ["MODES", "ndjson_output", "replace_text_sinks", "with_output"]

MODES = ("text", "ndjson")


def replace_text_sinks(sink: Sink[Any], new: Callable[[Sink[Any]], Sink[Any]]) -> Sink[Any]:
    """``sink`` with every sink that prints text on standard output
    replaced by ``new(that sink)``; a sink with none gets ``new`` added
    beside it (through a tee, with no sink to take the format from, it is
    given ``sink`` itself)."""
    if isinstance(sink, TeeSink):
        if not sink.prints_text():
            return TeeSink([*sink.sinks, new(sink)], name=sink.name)
        replaced = [new(s) if s.prints_text() else s for s in sink.sinks]
        return TeeSink(replaced, name=sink.name)
    if sink.prints_text():
        return new(sink)
    return TeeSink([sink, new(sink)])


def ndjson_output(quiet: bool) -> Sink[Any]:
    """NDJSON records on standard output: results, and (unless ``quiet``)
    attach, loss and summary records in the same stream."""
    return sink_from_spec("ndjson:-,reports=no" if quiet else "ndjson:-")


def with_output(pipeline: Pipeline, mode: str, *, quiet: bool = False) -> Pipeline:
    """``pipeline`` writing its results as ``mode`` says (one of :data:`MODES`)."""
    if mode == "ndjson":
        sink = replace_text_sinks(pipeline.sink, lambda _: ndjson_output(quiet))
        return pipeline.replace(sink=sink)
    if mode != "text":
        raise ValueError(f"output mode {mode!r} is not one of {', '.join(MODES)}")
    return pipeline.replace(sink=pipeline.sink.results_only()) if quiet else pipeline
