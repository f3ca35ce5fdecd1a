"""A start/complete join inside the BPF program.

Starts wait in an LRU hash keyed by the join's key fields (``BPF_TABLE
("lru_hash", ...)``, ``max_pending`` entries: when it is full the oldest
start makes room). A complete looks its start up, takes it out (only the
one completion that deletes it pairs with it) and computes the latency
from the two records' time fields. What follows in the kernel reads
``latency_ns``; when nothing follows, the pair leaves through the source's
buffer as one record holding both events, which user space decodes into
the operator's own :class:`~flowtrace.records.JoinPair`.

Counted as the operator counts them in Python: ``start_replaced`` (or
``start_repeated`` with ``keep_first``), ``complete_without_start``,
``expired`` (a complete ``timeout`` or more after its start), and at the
end ``pending_at_end`` (starts still waiting) and ``pending_limit``
(starts the full table pushed out: new starts, less those taken out and
those still waiting). In Python a full table refuses the newest start; in
the kernel the oldest one goes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .c_literals import LiteralError, integer
from .events import Layout, event_type, layout_of
from .kernel_chain import OUTPUT_FUNCTION, Counters, Stage, Unsupported
from .kernel_forms import JoinForm
from .kernel_view import Field, Member, View
from .ktypes import KernelType
from .records import JoinPair

__all__ = ["JoinStage", "PairLayout"]

MAX_PENDING = 1 << 20
_S64 = KernelType("s64", 8, "<i8")
_U64 = KernelType("u64", 8, "<u8")
LATENCY = "latency_ns"


@dataclass(frozen=True)
class PairLayout(Layout[Any]):
    """Records holding a start event (fields ``s_<name>``), a complete event
    (``c_<name>``) and ``latency_ns``; decoded into the join's records."""

    start: type[Any] = object
    complete: type[Any] = object
    key: tuple[str, ...] = ()
    pair: Any = None

    def decode(
        self, records: np.ndarray[Any, Any], strings: dict[bytes, str] | None = None
    ) -> list[Any]:
        starts = _part(records, self.start, "s_", strings)
        completes = _part(records, self.complete, "c_", strings)
        latencies = records[LATENCY].tolist()
        names = self.key
        make = self.pair
        out = []
        for start, complete, latency in zip(starts, completes, latencies, strict=True):
            key = (
                getattr(start, names[0])
                if len(names) == 1
                else tuple(getattr(start, n) for n in names)
            )
            out.append(make(key, start, complete, latency))
        return out


def _part(
    records: np.ndarray[Any, Any], event: type[Any], prefix: str, strings: dict[bytes, str] | None
) -> list[Any]:
    fields = layout_of(event).fields
    offsets = records.dtype.fields
    assert offsets is not None
    view = np.dtype(
        {
            "names": [f.name for f in fields],
            "formats": [f.ktype.numpy_code for f in fields],
            "offsets": [offsets[prefix + f.name][1] for f in fields],
            "itemsize": records.dtype.itemsize,
        }
    )
    decoded: list[Any] = layout_of(event).decode(records.view(view), strings)
    return decoded


@functools.cache
def _struct(name: str, fields: tuple[tuple[str, KernelType], ...]) -> Layout[Any]:
    layout: Layout[Any] = layout_of(event_type(name, list(fields)))
    return layout


def _c_struct(name: str, layout: Layout[Any]) -> str:
    lines = [f"struct {name} {{"] + [f"    {f.ktype.c_declaration(f.name)}" for f in layout.fields]
    return "\n".join([*lines, "};"])


class JoinStage(Stage):
    """A start/complete join (see the module docstring)."""

    def __init__(self, number: int, form: JoinForm, view: View) -> None:
        self.form = form
        self.number = number
        starts = view.member_of(form.start)
        completes = [m for m in view.member_of(form.complete) if m not in starts]
        others = [m for m in view.members if m not in starts and m not in completes]
        if not starts or not completes or any(m.tag is None for m in view.members):
            raise Unsupported(
                f"joins {form.start.__name__} with {form.complete.__name__}, which are not two"
                f" of the types this source emits ({view.names()})"
            )
        if others:
            raise Unsupported(
                f"{', '.join(m.event.__name__ for m in others)} would pass through the join;"
                " the kernel joins a source of starts and completes only"
            )
        if not form.start_key or len(form.start_key) != len(form.complete_key):
            raise Unsupported("a join keyed by a Python function")
        self.starts = starts
        self.completes = completes
        self.start_keys = {m.tag: self._fields(m, form.start_key) for m in starts}
        self.complete_keys = {m.tag: self._fields(m, form.complete_key) for m in completes}
        kinds = {
            tuple(f.ktype.unfilled() for f in fs)
            for fs in [*self.start_keys.values(), *self.complete_keys.values()]
        }
        if len(kinds) != 1:
            raise Unsupported("its start and complete key fields differ in type")
        times = {m.tag: self._fields(m, (form.time_field,))[0] for m in [*starts, *completes]}
        if any(f.ktype.is_string for f in times.values()):
            raise Unsupported(f"its time field {form.time_field!r} is a string")
        self.times = times
        if not 1 <= form.max_pending <= MAX_PENDING:
            raise Unsupported(
                f"max_pending={form.max_pending} (the kernel keeps 1 to {MAX_PENDING})"
            )
        try:
            timeout = None if form.timeout is None else round(form.timeout * 1e9)
            self.timeout = None if timeout is None else integer(timeout, _S64)
        except (LiteralError, OverflowError, ValueError) as exc:
            raise Unsupported(f"timeout {form.timeout!r:.40}: {exc}") from None
        key_fields = self.start_keys[starts[0].tag]
        self.key = _struct("FtJoinKey", tuple((f.name, f.ktype.unfilled()) for f in key_fields))
        self.pairs_refused = self._pairs_refused()
        self._pairs: PairLayout | None = None
        start_size = self._start_struct(True).size
        pair_size = 0 if self.pairs_refused else self.pair_layout.size
        self.stack_bytes = self.key.size * 2 + start_size * 2 + pair_size  # the worst case
        self.what = (
            f"start/complete by {', '.join(form.start_key)} in an LRU hash of"
            f" {form.max_pending} starts; latency computed in the kernel"
        )

    @staticmethod
    def _fields(member: Member, names: tuple[str, ...]) -> list[Field]:
        found = []
        for name in names:
            f = member.field(name)
            if f is None:
                raise Unsupported(
                    f"reads {name!r}, which {member.event.__name__} does not have in the kernel"
                )
            found.append(f)
        return found

    def _pairs_refused(self) -> str | None:
        if len(self.starts) > 1 or len(self.completes) > 1:
            return (
                "its pairs would hold events of several types;"
                " only what follows in the kernel could use them"
            )
        return None

    def view_after(self, view: View) -> View:
        return View((Member(JoinPair, None, (Field(LATENCY, _S64, LATENCY),)),))

    output = "pairs"

    def written_last(self) -> Layout[Any]:
        return self.pair_layout

    @property
    def pair_layout(self) -> Layout[Any]:
        """The records a last join writes to the buffer."""
        if self._pairs is None:
            start, complete = self.starts[0], self.completes[0]
            fields = [(LATENCY, _S64)]
            fields += [(f"s_{f.name}", f.ktype.unfilled()) for f in start.fields]
            fields += [(f"c_{f.name}", f.ktype.unfilled()) for f in complete.fields]
            base = layout_of(event_type("FtPair", fields))
            self._pairs = PairLayout(
                base.event, base.fields, base.size, base.align,
                start.event, complete.event, self.form.start_key, self.form.pair,
            )  # fmt: skip
        return self._pairs

    @property
    def starts_map(self) -> str:
        return f"ft_starts_{self.number}"

    def _start_struct(self, last: bool) -> Layout[Any]:
        if last:
            member = self.starts[0]
            return _struct("FtStart", tuple((f.name, f.ktype.unfilled()) for f in member.fields))
        return _struct("FtStart", ((self.form.time_field, _U64),))

    def code(self, index: int, counters: Counters, last: bool) -> list[str]:
        n = self.number
        lines = [counters.count(index, "in")]
        for i, m in enumerate(self.starts):
            lines += [f"{'if' if i == 0 else 'else if'} ({m.condition}) {{  // a start"]
            lines += [f"    {line}" for line in self._start(m, index, counters, last)]
            lines += ["    return;", "}"]
        lines += [
            f"struct ft_join_key_{n} key;",
            "__builtin_memset(&key, 0, sizeof(key));",
            "u64 done_ns = 0;",
        ]
        for i, m in enumerate(self.completes):
            lines += [f"{'if' if i == 0 else 'else if'} ({m.condition}) {{  // a complete"]
            lines += [
                f"    {f.copy_into('key', k.name)}"
                for f, k in zip(self.complete_keys[m.tag], self.key.fields, strict=True)
            ]
            lines += [f"    done_ns = {self.times[m.tag].c};", "}"]
        missing = counters.count(index, "complete_without_start")
        lines += [
            f"struct ft_start_{n} *found = {self.starts_map}.lookup(&key);",
            "if (!found) {",
            f"    {missing}",
            "    return;",
            "}",
            f"struct ft_start_{n} start = *found;",
            f"if ({self.starts_map}.delete(&key) != 0) {{  // another completion took it",
            f"    {missing}",
            "    return;",
            "}",
            counters.count(index, "taken"),
            f"s64 {LATENCY} = (s64)(done_ns - start.{self.form.time_field});",
        ]
        if self.timeout is not None:
            lines += [
                f"if ({LATENCY} >= {self.timeout}) {{",
                f"    {counters.count(index, 'expired')}",
                "    return;",
                "}",
            ]
        if last:
            lines += self._pair()
        return lines

    def _start(self, m: Member, index: int, counters: Counters, last: bool) -> list[str]:
        n = self.number
        keep = self.form.keep_first
        lines = [f"struct ft_join_key_{n} key;", "__builtin_memset(&key, 0, sizeof(key));"]
        lines += [
            f.copy_into("key", k.name)
            for f, k in zip(self.start_keys[m.tag], self.key.fields, strict=True)
        ]
        lines += [f"struct ft_start_{n} start;", "__builtin_memset(&start, 0, sizeof(start));"]
        if last:
            lines += [f.copy_into("start", f.name) for f in m.fields]
        else:
            lines.append(f"start.{self.form.time_field} = {self.times[m.tag].c};")
        lines += [
            f"if ({self.starts_map}.insert(&key, &start) == 0) {{  // full: the oldest start goes",
            f"    {counters.count(index, 'new')}",
            "} else {  // a start with this key is waiting",
            f"    {counters.count(index, 'start_repeated' if keep else 'start_replaced')}",
        ]
        if not keep:
            lines.append(f"    {self.starts_map}.update(&key, &start);")
        return [*lines, "}"]

    def _pair(self) -> list[str]:
        start, complete = self.starts[0], self.completes[0]
        lines = [
            f"struct {self.pair_layout.c_name} pair;",
            "__builtin_memset(&pair, 0, sizeof(pair));",
            f"pair.{LATENCY} = {LATENCY};",
        ]
        lines += [
            Field(f.name, f.ktype, f"start.{f.name}").copy_into("pair", f"s_{f.name}")
            for f in start.fields
        ]
        lines += [f.copy_into("pair", f"c_{f.name}") for f in complete.fields]
        return [*lines, f"{OUTPUT_FUNCTION}(ctx, &pair);"]

    def declarations(self, last: bool) -> str:
        n = self.number
        parts = [
            _c_struct(f"ft_join_key_{n}", self.key),
            _c_struct(f"ft_start_{n}", self._start_struct(last)),
            f'BPF_TABLE("lru_hash", struct ft_join_key_{n}, struct ft_start_{n},'
            f" {self.starts_map}, {self.form.max_pending});  // starts waiting for their complete",
        ]
        if last:
            parts.append(self.pair_layout.c_struct())
        return "\n".join(parts)
