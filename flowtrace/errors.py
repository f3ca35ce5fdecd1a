"""The exceptions flowtrace raises, and what to catch.

::

    FlowtraceError                  every error flowtrace raises on purpose
    ├── EventDefinitionError        an Event class cannot be laid out
    ├── PipelineDefinitionError     a pipeline is composed wrongly
    ├── PipelineFileError           a pipeline file cannot be loaded (CLI exit 2)
    ├── AttachError                 no alternative of a probe fits this kernel;
    │   │                           nothing stays attached
    │   └── KernelUnreadable        the kernel's description (tracefs) cannot be
    │                               read here: not root, or not mounted
    ├── KernelError                 bcc cannot compile or load the BPF program
    └── StageError                  a stage failed while running; names the stage,
                                    the cause is chained as ``__cause__``

Each message is one line that names the problem and, where there is one, the
fix. An error that is a bug (in a pipeline file, a plugin or flowtrace) is
reported in one line too, with where it was raised; the environment variable
``FLOWTRACE_DEBUG=1`` makes the command print its traceback as well.
"""

from __future__ import annotations

import os
import traceback

from .visible import visible

__all__ = [
    "DEBUG_HINT",
    "AttachError",
    "EventDefinitionError",
    "FlowtraceError",
    "KernelError",
    "KernelUnreadable",
    "PipelineDefinitionError",
    "PipelineFileError",
    "StageError",
    "debugging",
    "describe",
    "one_line",
    "raised_at",
]

DEBUG_HINT = "FLOWTRACE_DEBUG=1 shows the traceback"
"""What error lines about a bug say to get its traceback."""


def debugging() -> bool:
    """Whether ``FLOWTRACE_DEBUG`` asks for tracebacks (set, not empty or 0)."""
    return os.environ.get("FLOWTRACE_DEBUG", "") not in ("", "0")


class FlowtraceError(Exception):
    """Base of every error flowtrace raises on purpose."""


class EventDefinitionError(FlowtraceError):
    """An Event subclass cannot be laid out as a kernel record."""


class PipelineDefinitionError(FlowtraceError):
    """A pipeline is composed wrongly (for instance, no sink at its end)."""


class PipelineFileError(FlowtraceError):
    """A pipeline file is missing, broken, or defines no pipeline."""


class AttachError(FlowtraceError):
    """No alternative of a probe can attach on this kernel."""


class KernelUnreadable(AttachError):
    """What the kernel says about its tracepoints cannot be read here (tracefs
    is readable by root only, or not mounted); a plan checks such a source's
    fields when it can read them (at run, or from a recording)."""


class KernelError(FlowtraceError):
    """bcc could not compile or load the BPF program."""


class StageError(FlowtraceError):
    """A pipeline stage raised; ``stage`` names it, ``__cause__`` is the error."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {describe(cause)}")
        self.stage = stage


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """``exc``'s message (or the text) on one line: white space, line ends
    included, folded to single spaces, other control characters shown as
    ``\\xNN``, at most ``limit`` characters; an exception's type name when
    it has no message."""
    text = visible(" ".join(str(exc).split()))[:limit]
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "")


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (see :func:`one_line`); for an exception
    without a message, its type and where it was raised instead
    (``BrokenResourceError (no message; raised at FILE:LINE)``)."""
    text = one_line(str(exc), limit)
    if text:
        return f"{type(exc).__name__}: {text}"
    where = raised_at(exc)
    return f"{type(exc).__name__} (no message{'; raised at ' + where if where else ''})"


def raised_at(exc: BaseException, in_file: str | None = None) -> str:
    """``FILE:LINE`` where ``exc`` was raised: the innermost frame of its
    traceback, or with ``in_file`` the innermost frame in that file (a
    pipeline file's own line that led to it) when there is one; "" without
    a traceback."""
    frames = list(traceback.extract_tb(exc.__traceback__))
    if in_file is not None:
        own = [f for f in frames if f.filename == in_file]
        frames = own or frames
    return visible(f"{frames[-1].filename}:{frames[-1].lineno}") if frames else ""
