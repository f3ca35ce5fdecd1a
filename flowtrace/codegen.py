"""The BPF C program of a kernel source, generated from its event and probes.

Layout of the generated text::

    headers
    the record struct, derived from the event class
    the output buffer (ring buffer or perf buffer) and the lost counter
    ft_submit(): output a record, counting a failed output as lost
    the source's prelude (its own maps and helpers)
    per probe: ft_probe_N(ctx, params...) with the body,
               then one entry function per chosen attach point calling it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .events import Layout
from .plan import Choice
from .probes import AttachPoint

__all__ = ["EVENTS_MAP", "LOST_MAP", "Program", "generate"]

EVENTS_MAP = "ft_events"
LOST_MAP = "ft_lost"

_HEADER = """\
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
"""


@dataclass(frozen=True)
class Program:
    """Generated C text plus, per attach point, the entry function's name."""

    text: str
    entries: tuple[tuple[AttachPoint, str], ...]


def _outputs(layout: Layout[Any], transport: str, ring_pages: int) -> str:
    struct = layout.c_name
    if transport == "ringbuf":
        declare = f"BPF_RINGBUF_OUTPUT({EVENTS_MAP}, {ring_pages});"
        output = f"{EVENTS_MAP}.ringbuf_output(e, sizeof(*e), 0)"
    else:
        declare = f"BPF_PERF_OUTPUT({EVENTS_MAP});"
        output = f"{EVENTS_MAP}.perf_submit(ctx, e, sizeof(*e))"
    return f"""\
{declare}
BPF_PERCPU_ARRAY({LOST_MAP}, u64, 1);

static __always_inline void ft_submit(void *ctx, struct {struct} *e) {{
    if ({output} != 0) {{
        int zero = 0;
        u64 *lost = {LOST_MAP}.lookup(&zero);
        if (lost)
            (*lost)++;
    }}
}}
"""


def _probe_function(index: int, choice: Choice, layout: Layout[Any]) -> str:
    probe = choice.probe
    params = "".join(f", {p.c_type} {p.name}" for p in probe.params)
    lines = [f"static __always_inline int ft_probe_{index}(void *ctx{params}) {{"]
    if probe.emits:
        lines.append(f"    struct {layout.c_name} e = {{}};")
        lines += [f"    {line}" for line in layout.c_fill("e").splitlines()]
    lines += [f"    {line}" for line in probe.body.strip().splitlines()]
    if probe.emits:
        lines.append("    ft_submit(ctx, &e);")
    lines += ["    return 0;", "}"]
    return "\n".join(lines)


def generate(
    layout: Layout[Any],
    choices: Sequence[Choice],
    *,
    prelude: str,
    transport: str,
    ring_pages: int,
) -> Program:
    """The program for ``choices`` (one per probe) emitting ``layout`` records."""
    parts = [_HEADER, layout.c_struct(), _outputs(layout, transport, ring_pages)]
    if prelude.strip():
        parts.append(prelude.strip() + "\n")
    entries: list[tuple[AttachPoint, str]] = []
    for index, choice in enumerate(choices):
        parts.append(_probe_function(index, choice, layout))
        call = f"ft_probe_{index}({{args}})"
        for n, point in enumerate(choice.chosen):
            fn = f"ft_entry_{index}_{n}"
            parts.append(point.entry(fn, call, choice.probe.params))
            entries.append((point, fn))
    return Program("\n\n".join(parts) + "\n", tuple(entries))
