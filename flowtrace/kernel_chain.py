"""The operators a kernel source runs inside its BPF program, compiled to C.

A :class:`ChainBuilder` takes the forms of the operators after a kernel
source (:mod:`flowtrace.kernel_forms`), one at a time, checks each against
the record the probes fill (:mod:`flowtrace.kernel_view`) and says why
when one cannot run in the kernel. :meth:`ChainBuilder.compile` then makes
the C: ``ft_submit(ctx, e)``, which the probes call with their record,
runs the stages in order with early returns (a filter's condition comes
before anything is written or counted), and ends by writing the record to
the source's buffer (``ft_output``), writing a join's pair there, or
updating an aggregate's maps.

Every stage counts the records that reach it, and what it drops by reason,
in one per-CPU array (``ft_flow``), so the run's counters show each stage
as if it ran in Python. Values from the pipeline reach the C only as
checked literals (:mod:`flowtrace.c_literals`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .c_literals import LiteralError, bytes_equal, bytes_prefix, integer, integer_range
from .events import Layout
from .kernel_forms import COMPARISONS, Comparison, Condition, Every, FilterForm, Negation, Some
from .kernel_view import Field, View

__all__ = [
    "FLOW_MAP",
    "OUTPUT_FUNCTION",
    "ChainBuilder",
    "CompiledChain",
    "Counters",
    "Stage",
    "Unsupported",
    "condition_c",
    "shared_field",
]

FLOW_MAP = "ft_flow"
OUTPUT_FUNCTION = "ft_output"
"""What ``ft_submit`` calls to write a record to the source's own buffer."""

MAX_SET = 64
"""The most values an ``isin`` compiles to (one comparison each)."""

STACK_BUDGET = 448
"""Bytes of the BPF program's 512-byte stack the record and the stages may
take (the rest is for the compiler's own)."""


class Unsupported(Exception):
    """A form that cannot run in the kernel; the message says why."""


def shared_field(view: View, name: str) -> Field:
    """The field ``name`` every event type of ``view`` has, or why not."""
    found = view.shared(name)
    if isinstance(found, str):
        raise Unsupported(found)
    return found


@dataclass
class Counters:
    """Slots of the per-CPU flow counters: what reached each kernel stage
    and what it dropped, by reason."""

    slots: list[tuple[int, str]] = field(default_factory=list)

    def slot(self, stage: int, what: str) -> int:
        key = (stage, what)
        if key not in self.slots:
            self.slots.append(key)
        return self.slots.index(key)

    def count(self, stage: int, what: str) -> str:
        """C adding one to the stage's counter ``what`` (``in``, or a reason
        for a drop: fixed names, never text from a pipeline)."""
        note = f"reached stage {stage}" if what == "in" else f"stage {stage}: {what}"
        return f"__sync_fetch_and_add(&flow->n[{self.slot(stage, what)}], 1);  // {note}"


class Stage(ABC):
    """One operator as the program runs it."""

    what: str
    """For ``explain``: what the stage does in the kernel."""

    stack_bytes = 0
    """Bytes of the program's stack its code takes at most (keys, copies)."""

    def declarations(self, last: bool) -> str:
        """Structs and maps the stage uses, placed before ``ft_submit``
        (``last``: no stage follows)."""
        return ""

    @abstractmethod
    def code(self, index: int, counters: Counters, last: bool) -> list[str]:
        """Lines of ``ft_submit`` for stage number ``index`` (``last``: no
        stage follows). A line may ``return;`` to end the record's way."""

    record_after: Layout[Any] | None = None
    """The record written out from this stage on, when it is no longer the
    source's (a running count adds fields)."""

    output: str = "records"
    """What leaves the kernel when this stage is the last (see
    :class:`CompiledChain`)."""

    def written_last(self) -> Layout[Any] | None:
        """The record this stage writes out when it is the last, when that
        is its own (a join's pair) rather than the record reaching it."""
        return None

    def view_after(self, view: View) -> View:
        """What the next stage reads (the same record by default)."""
        return view

    @property
    def ends_chain(self) -> str | None:
        """Why nothing may follow this stage in the kernel, if so."""
        return None


# -- filters ---------------------------------------------------------------


def _constant(op: str, value: int, low: int, high: int) -> str:
    """C for ``x op value`` where every ``x`` lies in ``low..high`` and
    ``value`` outside it: the comparison has the same answer for all."""
    above = value > high
    answers = {"==": False, "!=": True, "<": above, "<=": above, ">": not above, ">=": not above}
    return "1" if answers[op] else "0"


def _integer_test(f: Field, op: str, value: Any) -> str:
    low, high = integer_range(f.ktype)
    if op in ("in", "not in"):
        values = sorted(value, key=repr)
        if len(values) > MAX_SET:
            raise Unsupported(
                f"isin on {f.name!r} with {len(values)} values (the kernel takes {MAX_SET})"
            )
        numbers = [_as_integer(f, v) for v in values]
        kept = [integer(v, f.ktype) for v in numbers if low <= v <= high]
        anyof = "(" + " || ".join(f"{f.c} == {v}" for v in kept) + ")" if kept else "0"
        return anyof if op == "in" else f"!{anyof}"
    if op == "startswith":
        raise Unsupported(f"startswith on the integer field {f.name!r}")
    number = _as_integer(f, value)
    if not low <= number <= high:
        return _constant(op, number, low, high)
    return f"({f.c} {op} {integer(number, f.ktype)})"


def _as_integer(f: Field, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    raise Unsupported(
        f"compares the integer field {f.name!r} with {type(value).__name__} {value!r:.40}:"
        " the kernel compares integers with integers"
    )


def _string_test(f: Field, op: str, value: Any) -> str:
    size = f.ktype.array_len
    try:
        if op in ("==", "!="):
            test = bytes_equal(f.c, size, value)
            return test if op == "==" else f"!{test}"
        if op in ("in", "not in"):
            values = sorted(value, key=repr)
            if len(values) > MAX_SET:
                raise Unsupported(
                    f"isin on {f.name!r} with {len(values)} strings (the kernel takes {MAX_SET})"
                )
            tests = [bytes_equal(f.c, size, v) for v in values]
            anyof = "(" + " || ".join(tests) + ")" if tests else "0"
            return anyof if op == "in" else f"!{anyof}"
        if op == "startswith":
            return bytes_prefix(f.c, size, value)
    except LiteralError as exc:
        raise Unsupported(f"compares {f.name!r} with {value!r:.40}: {exc}") from None
    raise Unsupported(
        f"compares the string field {f.name!r} with {op}: the kernel compares strings"
        " for equality and prefix only"
    )


def condition_c(condition: Condition, view: View) -> str:
    """``condition`` as a C expression over the record of ``view``; raises
    :class:`Unsupported` naming the first part that has no C form."""
    if isinstance(condition, Every):
        parts = [condition_c(p, view) for p in condition.parts]
        return "(" + " && ".join(parts) + ")" if parts else "1"
    if isinstance(condition, Some):
        parts = [condition_c(p, view) for p in condition.parts]
        return "(" + " || ".join(parts) + ")" if parts else "0"
    if isinstance(condition, Negation):
        return f"!{condition_c(condition.part, view)}"
    if not isinstance(condition, Comparison) or condition.op not in COMPARISONS:
        raise Unsupported(f"a condition the kernel does not know: {condition!r:.60}")
    found = view.shared(condition.field)
    if isinstance(found, str):
        raise Unsupported(found)
    if found.ktype.is_string:
        return _string_test(found, condition.op, condition.value)
    try:
        return _integer_test(found, condition.op, condition.value)
    except (LiteralError, TypeError) as exc:
        raise Unsupported(
            f"compares {condition.field!r} with {condition.value!r:.40}: {exc}"
        ) from None


class FilterStage(Stage):
    """A field predicate, tested before anything is written or counted."""

    def __init__(self, condition: str, record: str = "e") -> None:
        self.condition = condition
        self.record = record
        self.what = "field predicate tested in the probe, before anything is written or counted"

    def code(self, index: int, counters: Counters, last: bool) -> list[str]:
        lines = [counters.count(index, "in"), f"if (!{self.condition})", "    return;"]
        if last:
            lines.append(f"{OUTPUT_FUNCTION}(ctx, {self.record});")
        return lines


# -- the chain -------------------------------------------------------------


@dataclass(frozen=True)
class CompiledChain:
    """The C of a chain and what user space needs to read its results.

    ``output`` says what leaves the kernel: ``"records"`` (the source's own
    records through its buffer, or records of ``leaving`` when a stage
    added fields to them), ``"pairs"`` (a join's pairs, records of
    ``leaving``) or ``"maps"`` (an aggregate's results, read from its
    maps by user space). ``counters`` names each flow counter slot
    ``(stage number, what)``.
    """

    declarations: str
    submit: str
    output: str
    stages: tuple[Stage, ...]
    counters: tuple[tuple[int, str], ...]
    leaving: Layout[Any] | None = None


class ChainBuilder:
    """Stages for a kernel source whose probes fill ``record`` (seen as
    ``view``), added in pipeline order while they have an in-kernel form."""

    def __init__(self, record: Layout[Any], view: View) -> None:
        self.record = record
        self.view = view
        self.stages: list[Stage] = []

    def add(self, stage: Stage) -> None:
        """Append a stage already checked against :attr:`view`; raises
        :class:`Unsupported` when the program's stack could not hold it."""
        used = self.record.size + sum(s.stack_bytes for s in self.stages) + stage.stack_bytes
        if used > STACK_BUDGET:
            raise Unsupported(
                f"its record and keys would take {used} bytes of the BPF program's 512-byte"
                f" stack (at most {STACK_BUDGET} here)"
            )
        self.stages.append(stage)
        self.view = stage.view_after(self.view)

    @property
    def closed(self) -> str | None:
        """Why no further stage can be added, if so."""
        return self.stages[-1].ends_chain if self.stages else None

    def filter(self, form: FilterForm) -> FilterStage:
        """The stage of a filter over the current view (raises Unsupported)."""
        return FilterStage(condition_c(form.condition, self.view), self.view.record)

    def compile(self) -> CompiledChain:
        """``ft_submit`` and the declarations of every stage."""
        counters = Counters()
        body: list[str] = []
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            body += stage.code(index, counters, index == last)
        leaving: Layout[Any] | None = None
        for stage in self.stages:
            leaving = stage.record_after or leaving
        leaving = self.stages[-1].written_last() or leaving
        declarations = [s.declarations(i == last) for i, s in enumerate(self.stages)]
        flow = (
            f"struct ft_flow_counts {{\n    u64 n[{max(1, len(counters.slots))}];\n}};\n"
            f"BPF_PERCPU_ARRAY({FLOW_MAP}, struct ft_flow_counts, 1);"
            "  // records reaching each stage in the kernel, and what each dropped"
        )
        submit = [
            f"static __always_inline void ft_submit(void *ctx, struct {self.record.c_name} *e) {{",
            "    int ft_zero = 0;",
            f"    struct ft_flow_counts *flow = {FLOW_MAP}.lookup(&ft_zero);",
            "    if (!flow)",
            "        return;",
            *(f"    {line}" if line else "" for line in body),
            "}",
        ]
        return CompiledChain(
            "\n\n".join([flow, *(d for d in declarations if d)]),
            "\n".join(submit) + "\n",
            self.stages[-1].output,
            tuple(self.stages),
            tuple(counters.slots),
            leaving,
        )
