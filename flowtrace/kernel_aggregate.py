"""Aggregates inside the BPF program: counts by key, log2 and linear
histograms, count/rate/sum/min/max, in per-CPU maps read by user space.

The C reads like the tutorial's: a ``BPF_PERCPU_HASH`` keyed by the
grouping fields (``BPF_PERCPU_ARRAY`` of one element without a key),
looked up and updated in the probe. It is not ``.increment()``: that
neither counts a key the full map refuses nor adds atomically, so a
concurrent first update can be lost; here a key the map refuses is counted
(``key_limit``, as the operator counts it in Python), values are added with
atomic instructions (uprobe programs can be preempted on their CPU), and
each key remembers when it was first counted, so results list keys in
order of first appearance as the operator does.

Interval windows keep two sets of maps, one for even and one for odd
window numbers (see :mod:`flowtrace.map_output` for how a window is closed
without losing an increment). User space reads a window's maps, sums the
per-CPU values, and hands the operator accumulators in its own shapes
(:class:`~flowtrace.kernel_forms.AggregateForm`); the operator builds the
records.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .c_literals import LiteralError, integer
from .events import Layout, event_type, layout_of
from .kernel_chain import Counters, Stage, Unsupported, shared_field
from .kernel_forms import AggregateForm
from .kernel_view import View
from .ktypes import KernelType

__all__ = ["LOG2_SLOTS", "MAX_LINEAR_INDEX", "AggregateStage", "Maps"]

LOG2_SLOTS = 65
MAX_LINEAR_INDEX = 1024
MAX_KEYS = 1 << 20
MIN_WINDOW = 0.01
"""Shortest interval window run in the kernel (seconds)."""

WINDOW_MAP = "ft_window"
IN_FLIGHT_MAP = "ft_in_flight"

_U64 = KernelType("u64", 8, "<u8")
_OPAQUE = 'asm volatile("" : "+r"({var}));  // keep the bound check on this very value'

_SIGN = "0x8000000000000000ULL"


@dataclass(frozen=True)
class Maps:
    """The maps of one aggregate: their names (two with windows: even and
    odd window numbers), whether they are hashes by key (else one-element
    arrays), the key layout and the numpy type of one CPU's value."""

    names: tuple[str, ...]
    keyed: bool
    key: Layout[Any] | None
    value: np.dtype[Any]
    max_keys: int


@functools.cache
def _key_layout(fields: tuple[tuple[str, KernelType], ...]) -> Layout[Any]:
    made = event_type("FtKey", list(fields))
    layout: Layout[Any] = layout_of(made)
    return layout


class AggregateStage(Stage):
    """An aggregate kept in per-CPU maps (see the module docstring)."""

    output = "maps"

    def __init__(self, number: int, form: AggregateForm, view: View) -> None:
        self.form = form
        self.number = number
        kind = form.aggregate
        self.key_fields = [shared_field(view, name) for name in form.key]
        self.value_field = shared_field(view, form.value) if form.value else None
        if self.value_field is not None and self.value_field.ktype.is_string:
            raise Unsupported(f"{kind} of the string field {form.value!r}")
        if kind in ("sum", "min", "max", "log2", "linear") and self.value_field is None:
            raise Unsupported(f"{kind} of a value computed by a Python function")
        if kind == "count_by" and not self.key_fields:
            raise Unsupported("a count keyed by a Python function")
        if not 1 <= form.max_keys <= MAX_KEYS:
            raise Unsupported(
                f"max_keys={form.max_keys}: a BPF map holds 1 to {MAX_KEYS} keys here"
            )
        if kind == "linear" and not 0 <= form.max_index <= MAX_LINEAR_INDEX:
            raise Unsupported(
                f"a linear histogram to slot {form.max_index} (the kernel keeps {MAX_LINEAR_INDEX})"
            )
        if form.every is not None and form.every < MIN_WINDOW:
            raise Unsupported(
                f"windows of {form.every} s (the kernel closes windows of {MIN_WINDOW} s or more)"
            )
        try:
            self.divisor = integer(form.divisor, _U64)  # range-checked: 1 .. 2**64-1
        except LiteralError as exc:
            raise Unsupported(f"divisor {form.divisor!r:.40}: {exc}") from None
        slots = LOG2_SLOTS if kind == "log2" else form.max_index + 1
        self.struct = f"ft_aggregate_{number}"
        if kind == "log2":  # the values' sum too (a linear histogram's is its slots')
            self.members = ["u64 first_ns;", "u64 sum;", f"u64 slot[{slots}];"]
            value: list[tuple[str, Any, Any]] = [
                ("first_ns", "<u8", ()),
                ("sum", "<u8", ()),
                ("slot", "<u8", (slots,)),
            ]
        elif kind == "linear":
            self.members = ["u64 first_ns;", f"u64 slot[{slots}];"]
            value = [("first_ns", "<u8", ()), ("slot", "<u8", (slots,))]
        elif kind in ("sum", "min", "max"):
            self.members = ["u64 value;", "u64 count;", "u64 first_ns;"]
            value = [("value", "<u8", ()), ("count", "<u8", ()), ("first_ns", "<u8", ())]
        else:
            self.members = ["u64 count;", "u64 first_ns;"]
            value = [("count", "<u8", ()), ("first_ns", "<u8", ())]
        keyed = bool(self.key_fields)
        key = (
            _key_layout(tuple((f.name, f.ktype.unfilled()) for f in self.key_fields))
            if keyed
            else None
        )
        base = f"ft_{kind}_{number}"
        names = (f"{base}_even", f"{base}_odd") if form.every is not None else (base,)
        self.maps = Maps(names, keyed, key, np.dtype(value), form.max_keys)
        self.stack_bytes = (key.size if key is not None else 0) + 24  # the key, a small zero value
        self.what = self._describe()

    @property
    def ends_chain(self) -> str | None:
        return "follows an aggregate whose results leave the kernel as records read from its maps"

    def _describe(self) -> str:
        form = self.form
        what = {
            "count_by": "counts",
            "log2": "log2 histogram",
            "linear": "linear histogram",
        }.get(form.aggregate, form.aggregate)
        of = (
            f" of {form.value}" + (f" / {form.divisor}" if form.divisor != 1 else "")
            if form.value
            else ""
        )
        by = f" by {', '.join(form.key)}" if form.key else ""
        kind = "BPF_PERCPU_HASH" if self.maps.keyed else "BPF_PERCPU_ARRAY"
        room = f", {form.max_keys} keys" if self.maps.keyed else ""
        when = (
            f"every {form.every:g} s (exact windows)"
            if form.every is not None
            else "at end of stream"
        )
        return f"{what}{of}{by} in a {kind}{room}, read by user space {when}"

    def declarations(self, last: bool) -> str:
        lines = [f"struct {self.struct} {{"] + [f"    {m}" for m in self.members] + ["};"]
        key = self.maps.key
        if key is not None:
            lines += [f"struct ft_key_{self.number} {{"]
            lines += [f"    {f.ktype.c_declaration(f.name)}" for f in key.fields]
            lines += ["};"]
        big = self.form.aggregate in ("log2", "linear")
        for name in self.maps.names:
            if key is None:
                lines.append(f"BPF_PERCPU_ARRAY({name}, struct {self.struct}, 1);")
            elif big:  # allocated as keys arrive: one slot array per key and CPU
                lines.append(
                    f'BPF_F_TABLE("percpu_hash", struct ft_key_{self.number}, struct {self.struct},'
                    f" {name}, {self.form.max_keys}, BPF_F_NO_PREALLOC);"
                )
            else:
                lines.append(
                    f"BPF_PERCPU_HASH({name}, struct ft_key_{self.number}, struct {self.struct},"
                    f" {self.form.max_keys});"
                )
        if big and key is not None:
            lines.append(f"BPF_ARRAY(ft_zero_{self.number}, struct {self.struct}, 1);  // all zero")
        if self.form.every is not None:
            lines.append(WINDOW_DECLARATIONS)
        return "\n".join(lines)

    def code(self, index: int, counters: Counters, last: bool) -> list[str]:
        lines = [counters.count(index, "in")]
        if self.maps.key is not None:
            lines += [
                f"struct ft_key_{self.number} key;",
                "__builtin_memset(&key, 0, sizeof(key));",
            ]
            for f in self.key_fields:
                if f.ktype.is_string:
                    lines.append(f"__builtin_memcpy(key.{f.name}, {f.c}, sizeof(key.{f.name}));")
                else:
                    lines.append(f"key.{f.name} = {f.c};")
        updates = [self._update(name, index, counters) for name in self.maps.names]
        if len(updates) == 1:
            return lines + updates[0]
        return [
            *lines,
            "int parity = ft_window_enter();  // -1: the window moved twice meanwhile",
            "if (parity < 0) {",
            f"    {counters.count(index, 'window_race')}",
            "    return;",
            "}",
            "if (parity == 0) {",
            *(f"    {line}" for line in updates[0]),
            "} else {",
            *(f"    {line}" for line in updates[1]),
            "}",
            "ft_window_leave(parity);",
        ]

    def _update(self, name: str, index: int, counters: Counters) -> list[str]:
        """Update map ``name`` for the record (no early return: a window's
        in-flight count must be given back)."""
        struct = f"struct {self.struct}"
        if self.maps.key is None:
            head = [f"{struct} *v = {name}.lookup(&ft_zero);", "if (v) {"]
            tail = ["}"]
        else:
            if self.form.aggregate in ("log2", "linear"):
                init = [
                    f"    {struct} *zero = ft_zero_{self.number}.lookup(&ft_zero);",
                    "    if (zero)",
                    f"        {name}.insert(&key, zero);",
                ]
            else:
                init = [f"    {struct} zero = {{}};", f"    {name}.insert(&key, &zero);"]
            head = [
                f"{struct} *v = {name}.lookup(&key);",
                "if (!v) {  // a new key: the map refuses it when full",
                *init,
                f"    v = {name}.lookup(&key);",
                "}",
                "if (v) {",
                "    if (!v->first_ns)",
                "        v->first_ns = bpf_ktime_get_ns();",
            ]
            tail = ["} else {", f"    {counters.count(index, 'key_limit')}", "}"]
        body = [f"    {line}" for line in self._add(index, counters)]
        return head + body + tail

    def _add(self, index: int, counters: Counters) -> list[str]:
        kind = self.form.aggregate
        if kind in ("count_by", "count", "rate"):
            return ["__sync_fetch_and_add(&v->count, 1);"]
        f = self.value_field
        assert f is not None
        signed = f.ktype.c_type.startswith("s")
        divided = f"(u64){f.c}" + (f" / {self.divisor}" if self.form.divisor != 1 else "")
        if kind == "log2":
            return [
                f"u32 slot = bpf_log2l({divided});",
                _OPAQUE.format(var="slot"),
                f"if (slot < {LOG2_SLOTS})",
                "    __sync_fetch_and_add(&v->slot[slot], 1);",
                f"__sync_fetch_and_add(&v->sum, (u64){f.c});  // undivided, as the operator sums",
            ]
        if kind == "linear":
            top = self.form.max_index
            if signed and self.form.divisor == 1:
                test = [
                    f"s64 at = {f.c};",
                    _OPAQUE.format(var="at"),
                    f"if (at < 0 || at > {top}) {{",
                ]
            else:
                test = [f"u64 at = {divided};", _OPAQUE.format(var="at"), f"if (at > {top}) {{"]
            return [
                *test,
                f"    {counters.count(index, 'out_of_range')}",
                "} else {",
                "    __sync_fetch_and_add(&v->slot[at], 1);",
                "}",
            ]
        if kind == "sum":
            return [
                f"__sync_fetch_and_add(&v->value, (u64){f.c});",
                "__sync_fetch_and_add(&v->count, 1);",
            ]
        # min and max: the largest of an order-keeping transform of the value,
        # whose empty value (0) is below every real one
        t = f"(u64){f.c}"
        if signed:
            t = f"({t} ^ {_SIGN})"
        if kind == "min":
            t = f"~{t}"
        return [
            f"u64 t = {t};",
            "int done = 0;",
            "for (int i = 0; i < 4 && !done; i++) {  // compare and swap, retried if preempted",
            "    u64 seen = v->value;",
            "    done = seen >= t || __sync_val_compare_and_swap(&v->value, seen, t) == seen;",
            "}",
            "if (!done)",
            f"    {counters.count(index, 'contended')}",
            "__sync_fetch_and_add(&v->count, 1);",
        ]

    # -- reading -----------------------------------------------------------

    def accumulate(
        self, keys: list[Hashable] | None, values: np.ndarray[Any, Any]
    ) -> tuple[Any, int]:
        """The operator's accumulator(s) from one window's map contents, and
        how many events they hold. ``keys`` are the decoded keys (None for an
        array), ``values`` one row per key and a column per CPU."""
        kind = self.form.aggregate
        if keys is None:
            row = _merge_rows(self, values[0:1])
            return self._acc(row), self._events(row)
        merged: dict[Hashable, dict[str, Any]] = {}
        for key, cpus in zip(keys, values, strict=True):
            row = _merge_rows(self, cpus[None, :])
            if key in merged:  # raw keys that decode alike (invalid UTF-8)
                row = _combine(self, merged[key], row)
            merged[key] = row
        ordered = sorted(merged.items(), key=lambda item: item[1]["first_ns"])
        events = sum(self._events(row) for _, row in ordered)
        if kind == "count_by":
            return Counter({key: row["count"] for key, row in ordered}), events
        return {key: self._acc(row) for key, row in ordered}, events

    def empty(self) -> Any:
        """The accumulator of a window without events (unkeyed)."""
        return self._acc(None)

    def _events(self, row: dict[str, Any]) -> int:
        if self.form.aggregate in ("log2", "linear"):
            return int(sum(row["slot"]))
        return int(row["count"])

    def _acc(self, row: dict[str, Any] | None) -> Any:
        kind = self.form.aggregate
        if kind == "log2":  # the slots, then the values' sum, as the operator keeps them
            if row is None:
                return [0] * (LOG2_SLOTS + 1)
            return [int(n) for n in row["slot"]] + [self._signed(int(row["sum"]))]
        if kind == "linear":
            if row is None:
                return Counter()
            return Counter({i: int(n) for i, n in enumerate(row["slot"]) if n})
        if kind in ("count", "rate"):
            return 0 if row is None else int(row["count"])
        if row is None or not row["count"]:
            return 0 if kind == "sum" else None
        value = int(row["value"])
        if kind == "min":
            value = ~value & 0xFFFFFFFFFFFFFFFF
        if kind in ("min", "max") and self._is_signed():
            value ^= 1 << 63
        return self._signed(value)

    def _is_signed(self) -> bool:
        f = self.value_field
        assert f is not None
        return f.ktype.c_type.startswith("s")

    def _signed(self, value: int) -> int:
        """A 64-bit ``value`` as the value field's signedness reads it."""
        return value - (1 << 64) if self._is_signed() and value >= 1 << 63 else value


def _merge_rows(stage: AggregateStage, cpus: np.ndarray[Any, Any]) -> dict[str, Any]:
    """One key's values over every CPU (``cpus``: shape (1, ncpu))."""
    row = cpus[0]
    kind = stage.form.aggregate
    seen = row["first_ns"][row["first_ns"] > 0]
    merged: dict[str, Any] = {"first_ns": int(seen.min()) if len(seen) else 0}
    if kind in ("log2", "linear"):
        merged["slot"] = row["slot"].sum(axis=0, dtype=np.uint64)
        if kind == "log2":
            merged["sum"] = int(row["sum"].sum(dtype=np.uint64))
    else:
        merged["count"] = int(row["count"].sum(dtype=np.uint64))
    if kind == "sum":
        merged["value"] = int(row["value"].sum(dtype=np.uint64))
    elif kind in ("min", "max"):
        merged["value"] = int(row["value"].max())
    return merged


def _combine(stage: AggregateStage, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    firsts = [x for x in (a["first_ns"], b["first_ns"]) if x]
    out: dict[str, Any] = {"first_ns": min(firsts) if firsts else 0}
    kind = stage.form.aggregate
    if kind in ("log2", "linear"):
        out["slot"] = a["slot"] + b["slot"]
        if kind == "log2":
            out["sum"] = (a["sum"] + b["sum"]) & 0xFFFFFFFFFFFFFFFF
        return out
    out["count"] = a["count"] + b["count"]
    if kind == "sum":
        out["value"] = (a["value"] + b["value"]) & 0xFFFFFFFFFFFFFFFF
    elif kind in ("min", "max"):
        out["value"] = max(a["value"], b["value"])
    return out


WINDOW_DECLARATIONS = f"""\
// Interval windows: user space moves {WINDOW_MAP} to the next window number,
// then waits until no update of the previous window is under way (its
// parity's {IN_FLIGHT_MAP} count is 0) before reading and clearing its maps.
BPF_ARRAY({WINDOW_MAP}, u32, 1);
BPF_PERCPU_ARRAY({IN_FLIGHT_MAP}, s64, 2);

static __always_inline int ft_window_enter(void) {{
    int zero = 0;
    u32 *number = {WINDOW_MAP}.lookup(&zero);
    if (!number)
        return -1;
    for (int attempt = 0; attempt < 2; attempt++) {{
        u32 window = *(volatile u32 *)number;
        int parity = window & 1;
        s64 *busy = {IN_FLIGHT_MAP}.lookup(&parity);
        if (!busy)
            return -1;
        __sync_fetch_and_add(busy, 1);  // a full barrier: then read the window again
        if (*(volatile u32 *)number == window)
            return parity;
        __sync_fetch_and_add(busy, -1);  // it moved meanwhile: count in the new one
    }}
    return -1;
}}

static __always_inline void ft_window_leave(int parity) {{
    s64 *busy = {IN_FLIGHT_MAP}.lookup(&parity);
    if (busy)
        __sync_fetch_and_add(busy, -1);
}}"""
