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
fix.
"""

from __future__ import annotations

__all__ = [
    "AttachError",
    "EventDefinitionError",
    "FlowtraceError",
    "KernelError",
    "KernelUnreadable",
    "PipelineDefinitionError",
    "PipelineFileError",
    "StageError",
    "one_line",
]


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
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
        self.stage = stage


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc``'s message on one line (white space folded), at most ``limit``
    characters; the exception's type name when it has no message."""
    text = " ".join(str(exc).split())
    return text[:limit] or type(exc).__name__
