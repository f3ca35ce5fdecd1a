"""A running count and gap per key inside the BPF program, written with
each event (the tutorial's sync_count keeps both in a BPF hash).

Per key (the key fields' values; one element of a ``BPF_ARRAY`` without
key fields) the program keeps the events seen and the last time. For each
event it adds one to the count and swaps in the event's time, both with
atomic instructions (``__sync_fetch_and_add``, ``__sync_lock_test_and_set``),
so two CPUs never take the same number; then it copies the record into one
with the fields ``seq`` and ``gap`` added, which the stages after it read
and which leaves the kernel. A new key the full hash refuses is counted
(``key_limit``) and its event goes no further, as the operator drops it in
Python (:class:`~flowtrace.operators.RunningCount`).
"""

from __future__ import annotations

from typing import Any

from .events import Layout, event_type, layout_of
from .kernel_chain import OUTPUT_FUNCTION, Counters, Stage, Unsupported, shared_field
from .kernel_forms import RunningForm
from .kernel_view import Field, Member, View

__all__ = ["RunningStage"]

MAX_KEYS = 1 << 20


class RunningStage(Stage):
    """A running count (see the module docstring)."""

    def __init__(self, number: int, form: RunningForm, view: View) -> None:
        if len(view.members) != 1:
            raise Unsupported(
                f"a running count over several event types ({view.names()});"
                " the kernel adds its fields to a source of one type"
            )
        if not 1 <= form.max_keys <= MAX_KEYS:
            raise Unsupported(f"max_keys={form.max_keys} (a BPF map holds 1 to {MAX_KEYS} here)")
        (member,) = view.members
        self.member = member
        self.number = number
        self.form = form
        self.key_fields = [shared_field(view, name) for name in form.key]
        self.time = shared_field(view, form.time)
        if self.time.ktype.is_string:
            raise Unsupported(f"its time field {form.time!r} is a string")
        self.out: Layout[Any] = layout_of(form.output_type(member.event))
        self.record_after = self.out
        self.key = (
            layout_of(
                event_type(
                    f"FtRunningKey{number}", [(f.name, f.ktype.unfilled()) for f in self.key_fields]
                )
            )
            if self.key_fields
            else None
        )
        self.record = f"ft_record_{number}"
        self.stack_bytes = self.out.size + (self.key.size if self.key else 0) + 16
        where = (
            f"by {', '.join(form.key)} in a BPF_HASH of {form.max_keys} keys"
            if self.key is not None
            else "of the whole stream in a BPF_ARRAY"
        )
        self.what = f"running count and gap of {form.time} {where}, written with each event"

    @property
    def state_map(self) -> str:
        return f"ft_running_{self.number}"

    def view_after(self, view: View) -> View:
        fields = tuple(Field(f.name, f.ktype, f"{self.record}.{f.name}") for f in self.out.fields)
        return View((Member(self.out.event, None, fields),), f"&{self.record}")

    def declarations(self, last: bool) -> str:
        n = self.number
        lines = [f"struct ft_running_state_{n} {{", "    u64 seen;", "    u64 last;", "};"]
        note = f"  // per key: events seen, last {self.form.time}"
        if self.key is not None:
            lines += [
                self.key.c_struct(),
                f"BPF_HASH({self.state_map}, struct {self.key.c_name},"
                f" struct ft_running_state_{n}, {self.form.max_keys});{note}",
            ]
        else:
            lines.append(f"BPF_ARRAY({self.state_map}, struct ft_running_state_{n}, 1);{note}")
        lines.append(self.out.c_struct())
        return "\n".join(lines)

    def code(self, index: int, counters: Counters, last: bool) -> list[str]:
        n, state, record = self.number, self.state_map, self.record
        seq, gap = (f.name for f in self.out.fields[-2:])  # the fields it adds
        lines = [counters.count(index, "in")]
        if self.key is None:
            lines.append(f"struct ft_running_state_{n} *state = {state}.lookup(&ft_zero);")
        else:
            lines += [
                f"struct {self.key.c_name} key;",
                "__builtin_memset(&key, 0, sizeof(key));",
                *(f.copy_into("key", f.name) for f in self.key_fields),
                f"struct ft_running_state_{n} *state = {state}.lookup(&key);",
                "if (!state) {  // a new key: the map refuses it when full",
                f"    struct ft_running_state_{n} fresh = {{}};",
                f"    {state}.insert(&key, &fresh);",
                f"    state = {state}.lookup(&key);",
                "}",
            ]
        lines += [
            "if (!state) {",
            f"    {counters.count(index, 'key_limit')}",
            "    return;",
            "}",
            f"u64 time_{n} = (u64){self.time.c};",
            f"u64 seq_{n} = __sync_fetch_and_add(&state->seen, 1) + 1;",
            f"u64 last_{n} = __sync_lock_test_and_set(&state->last, time_{n});",
            f"struct {self.out.c_name} {record};",
            f"__builtin_memset(&{record}, 0, sizeof({record}));",
            *(f.copy_into(record, f.name) for f in self.member.fields),
            f"{record}.{seq} = seq_{n};",
            f"{record}.{gap} = seq_{n} > 1 && last_{n} ? (s64)(time_{n} - last_{n}) : 0;",
        ]
        if last:
            lines.append(f"{OUTPUT_FUNCTION}(ctx, &{record});")
        return lines
