"""flowtrace: bcc tracing as composable async pipelines.

A pipeline is ``source | operator | ... | sink``. Sources are bcc programs
(or recordings, or lists of events); operators transform batches of events;
sinks print, write or forward them. See ``docs/architecture.md``.
"""

from __future__ import annotations

from . import command_start  # noqa: F401  (first: Ctrl-C while the command starts)
from .argument_sources import Arg, raw_tracepoint, uprobe, usdt
from .clock import Clock, ManualClock, MonotonicClock
from .context import SourceContext, StageContext
from .errors import (
    AttachError,
    EventDefinitionError,
    FlowtraceError,
    KernelError,
    PipelineDefinitionError,
    PipelineFileError,
    StageError,
)
from .events import Event, Layout, layout_of
from .kernel_source import KernelSource
from .outputs import AutoBuffer, Output, PerfBuffer, RingBuffer
from .probes import (
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Param,
    PerfEvent,
    Probe,
    RawTracepoint,
    Scheme,
    Tracepoint,
    Uprobe,
    Uretprobe,
    Usdt,
    syscall_entry_points,
    syscall_exit_points,
)
from .runtime import Run
from .stages import AsyncOperator, Emit, Flow, Operator, Overflow, Pipeline, Sink, Source
from .stats import PipelineStats, StageStats
from .trace_pipe import TraceFields, TracePipe, TracePipeSource
from .typed_sources import TracepointSource, syscall_entry, syscall_exit, tracepoint, tracepoints

__all__ = [
    "Arg",
    "AsyncOperator",
    "AttachError",
    "AutoBuffer",
    "Clock",
    "Emit",
    "Event",
    "EventDefinitionError",
    "Fentry",
    "Fexit",
    "Flow",
    "FlowtraceError",
    "KernelError",
    "KernelSource",
    "Kprobe",
    "Kretprobe",
    "Layout",
    "ManualClock",
    "MonotonicClock",
    "Operator",
    "Output",
    "Overflow",
    "Param",
    "PerfBuffer",
    "PerfEvent",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineFileError",
    "PipelineStats",
    "Probe",
    "RawTracepoint",
    "RingBuffer",
    "Run",
    "Scheme",
    "Sink",
    "Source",
    "SourceContext",
    "StageContext",
    "StageError",
    "StageStats",
    "TraceFields",
    "TracePipe",
    "TracePipeSource",
    "Tracepoint",
    "TracepointSource",
    "Uprobe",
    "Uretprobe",
    "Usdt",
    "layout_of",
    "raw_tracepoint",
    "syscall_entry",
    "syscall_entry_points",
    "syscall_exit",
    "syscall_exit_points",
    "tracepoint",
    "tracepoints",
    "uprobe",
    "usdt",
]
