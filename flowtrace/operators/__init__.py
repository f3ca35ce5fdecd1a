"""Operators: turn raw probe events into answers.

Every operator works on batches underneath and reads as per-event logic::

    from flowtrace.operators import F, count, filter, log2_histogram

    sizes = disk_io() | filter(F.bytes > 0) | log2_histogram("bytes", unit="kbytes", divisor=1024)
    switches = task_switches() | count(["prev_pid", "next_pid"])

The catalogue, with what each operator buffers, its bounds, when it emits
and what it does at end of stream, is ``docs/operators.md``.
"""

from __future__ import annotations

from .aggregates import Aggregate, Collect, Count, Max, Min, Rate, Sum
from .basic import Filter, FlatMap, Map, filter, flat_map, map
from .buckets import Linear, Log2, linear_histogram, log2_bounds, log2_histogram, log2_index
from .count import CountBy, count
from .custom import EventOperator, per_event, stream_operator
from .extras import Distinct, Sample, Throttle, distinct, rate, sample, throttle
from .join import Join, join
from .merge import MergeBy, merge_by
from .predicates import AllOf, AnyOf, Compare, F, Not, Predicate, field
from .running import RunningCount, running_count
from .windowing import EventTime, ProcessingTime, Sliding, Tumbling
from .windows import DEFAULT_MAX_KEYS, Window, window

__all__ = [
    "DEFAULT_MAX_KEYS",
    "Aggregate",
    "AllOf",
    "AnyOf",
    "Collect",
    "Compare",
    "Count",
    "CountBy",
    "Distinct",
    "EventOperator",
    "EventTime",
    "F",
    "Filter",
    "FlatMap",
    "Join",
    "Linear",
    "Log2",
    "Map",
    "Max",
    "MergeBy",
    "Min",
    "Not",
    "Predicate",
    "ProcessingTime",
    "Rate",
    "RunningCount",
    "Sample",
    "Sliding",
    "Sum",
    "Throttle",
    "Tumbling",
    "Window",
    "count",
    "distinct",
    "field",
    "filter",
    "flat_map",
    "join",
    "linear_histogram",
    "log2_bounds",
    "log2_histogram",
    "log2_index",
    "map",
    "merge_by",
    "per_event",
    "rate",
    "running_count",
    "sample",
    "stream_operator",
    "throttle",
    "window",
]
