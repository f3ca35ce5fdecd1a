"""The BPF C program of a kernel source, generated from its event and probes.

Layout of the generated text::

    headers (the kernel's own only for probes on kernel functions and perf
    events), the lost counter and ft_count_lost()
    the record struct, derived from the event class (outputs that carry records)
    the output's declarations (its maps, ft_submit(): see flowtrace.outputs)
    the source's prelude (its own maps and helpers)
    per probe: ft_probe_N(ctx, params...) with the body as the output runs it,
               then one entry function per chosen attach point calling it

With ``in_flight``, each probe that emits a record counts itself in flight
while it runs: ``ft_probe_N`` becomes a wrapper that adds one to its CPU's
slot of ``ft_in_flight`` (an array of one cache line per CPU that user
space maps into its memory, so reading every count is plain loads, no
system call), runs the body (``ft_body_N``, whatever path it returns by)
and subtracts one after the record is output.
Both are atomic adds, which on x86-64 are full barriers: the count is
visible to other CPUs before the body reads the clock for the record's
timestamp, and the record is committed before the count drops. A probe
interrupted by another probe on the same CPU counts twice, which a count
allows. The reader uses it to release events without waiting for the
reorder window (see :mod:`flowtrace.reorder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .bpf_maps import possible_cpus
from .events import Layout
from .plan import Choice
from .probes import AttachPoint

__all__ = ["IN_FLIGHT_MAP", "IN_FLIGHT_SLOT", "LOST_MAP", "OutputCode", "Program", "generate"]

LOST_MAP = "ft_lost"
IN_FLIGHT_MAP = "ft_in_flight"

_KERNEL_HEADERS = "#include <linux/sched.h>\n"

_HEADER = f"""\
#include <uapi/linux/ptrace.h>

BPF_PERCPU_ARRAY({LOST_MAP}, u64, 1);  // records the program could not output

static __always_inline void ft_count_lost(void) {{
    int zero = 0;
    u64 *lost = {LOST_MAP}.lookup(&zero);
    if (lost)
        (*lost)++;
}}
"""


class OutputCode(Protocol):
    """What a program takes from its output (a :class:`flowtrace.outputs.Channel`)."""

    def declarations(self) -> str: ...

    def probe_body(self, body: str) -> str: ...


@dataclass(frozen=True)
class Program:
    """Generated C text plus, per attach point, the entry function's name."""

    text: str
    entries: tuple[tuple[AttachPoint, str], ...]
    in_flight: str | None = None
    """The array counting emitting probes in flight by CPU, if the program has one."""


IN_FLIGHT_SLOT = 64
"""Bytes of one CPU's slot of the in-flight array: a cache line of its own."""


def _in_flight_array(cpus: int) -> str:
    return f"""\
struct ft_in_flight_slot {{ u64 count; u64 unused[{IN_FLIGHT_SLOT // 8 - 1}]; }};
// emitting probes running now, by CPU; mapped into the reader's memory
BPF_F_TABLE("array", int, struct ft_in_flight_slot, {IN_FLIGHT_MAP}, {cpus}, BPF_F_MMAPABLE);
"""


def _probe_function(
    index: int, choice: Choice, layout: Layout[Any] | None, output: OutputCode, in_flight: bool
) -> str:
    probe = choice.probe
    record = layout if probe.emits else None  # what the body fills, if anything
    params = "".join(f", {p.c_type} {p.name}" for p in probe.params)
    counted = in_flight and record is not None
    name = f"ft_body_{index}" if counted else f"ft_probe_{index}"
    lines = [f"static __always_inline int {name}(void *ctx{params}) {{"]
    if record is not None:
        lines.append(f"    struct {record.c_name} e = {{}};")
        lines += [f"    {line}" for line in record.c_fill("e").splitlines()]
    lines += [f"    {line}" for line in output.probe_body(probe.body.strip()).splitlines()]
    if record is not None:
        lines.append("    ft_submit(ctx, &e);")
    lines += ["    return 0;", "}"]
    if counted:
        lines += ["", _counting_wrapper(index, params, [p.name for p in probe.params])]
    return "\n".join(lines)


def _counting_wrapper(index: int, params: str, names: list[str]) -> str:
    """``ft_probe_N``: ``ft_body_N`` counted in flight (see the module docstring)."""
    args = "".join(f", {name}" for name in names)
    return f"""\
static __always_inline int ft_probe_{index}(void *ctx{params}) {{
    int ft_cpu = bpf_get_smp_processor_id();  // ft_ names: the probe's parameters are in scope
    struct ft_in_flight_slot *ft_slot = {IN_FLIGHT_MAP}.lookup(&ft_cpu);
    if (ft_slot)
        __sync_fetch_and_add(&ft_slot->count, 1);
    int ft_ret = ft_body_{index}(ctx{args});
    if (ft_slot)
        __sync_fetch_and_add(&ft_slot->count, -1);
    return ft_ret;
}}"""


def generate(
    layout: Layout[Any] | None,
    choices: Sequence[Choice],
    *,
    prelude: str,
    output: OutputCode,
    in_flight: bool = False,
) -> Program:
    """The program for ``choices`` (one per probe). With a ``layout``, each
    emitting probe fills a record ``e`` and hands it to ``ft_submit``; without,
    the probe bodies output by themselves (``ft_printk``). ``in_flight``:
    emitting probes count themselves in flight (see the module docstring)."""
    kernel_functions = any(p.needs_kernel_headers() for c in choices for p in c.chosen)
    parts = [_KERNEL_HEADERS + _HEADER if kernel_functions else _HEADER]
    counted = in_flight and layout is not None and any(c.probe.emits for c in choices)
    if counted:
        parts.append(_in_flight_array(possible_cpus()))
    if layout is not None:
        parts.append(layout.c_struct())
    if declarations := output.declarations():
        parts.append(declarations)
    if prelude.strip():
        parts.append(prelude.strip() + "\n")
    entries: list[tuple[AttachPoint, str]] = []
    for index, choice in enumerate(choices):
        parts.append(_probe_function(index, choice, layout, output, counted))
        call = f"ft_probe_{index}({{args}})"
        for n, point in enumerate(choice.chosen):
            fn = f"ft_entry_{index}_{n}"
            parts.append(point.entry(fn, call, choice.probe.params))
            entries.append((point, fn))
    text = "\n\n".join(parts) + "\n"
    return Program(text, tuple(entries), IN_FLIGHT_MAP if counted else None)
