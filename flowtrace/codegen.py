"""The BPF C program of a kernel source, generated from its event and probes.

Layout of the generated text::

    headers (the kernel's own only for probes on kernel functions and perf
    events), the lost counter and ft_count_lost()
    the record struct, derived from the event class (outputs that carry records)
    the output's declarations (its maps, ft_submit(): see flowtrace.outputs)
    the source's prelude (its own maps and helpers)
    per probe: ft_probe_N(ctx, params...) with the body as the output runs it,
               then one entry function per chosen attach point calling it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .events import Layout
from .plan import Choice
from .probes import AttachPoint

__all__ = ["LOST_MAP", "OutputCode", "Program", "generate"]

LOST_MAP = "ft_lost"

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


def _probe_function(
    index: int, choice: Choice, layout: Layout[Any] | None, output: OutputCode
) -> str:
    probe = choice.probe
    record = layout if probe.emits else None  # what the body fills, if anything
    params = "".join(f", {p.c_type} {p.name}" for p in probe.params)
    lines = [f"static __always_inline int ft_probe_{index}(void *ctx{params}) {{"]
    if record is not None:
        lines.append(f"    struct {record.c_name} e = {{}};")
        lines += [f"    {line}" for line in record.c_fill("e").splitlines()]
    lines += [f"    {line}" for line in output.probe_body(probe.body.strip()).splitlines()]
    if record is not None:
        lines.append("    ft_submit(ctx, &e);")
    lines += ["    return 0;", "}"]
    return "\n".join(lines)


def generate(
    layout: Layout[Any] | None,
    choices: Sequence[Choice],
    *,
    prelude: str,
    output: OutputCode,
) -> Program:
    """The program for ``choices`` (one per probe). With a ``layout``, each
    emitting probe fills a record ``e`` and hands it to ``ft_submit``; without,
    the probe bodies output by themselves (``ft_printk``)."""
    kernel_functions = any(p.needs_kernel_headers() for c in choices for p in c.chosen)
    parts = [_KERNEL_HEADERS + _HEADER if kernel_functions else _HEADER]
    if layout is not None:
        parts.append(layout.c_struct())
    if declarations := output.declarations():
        parts.append(declarations)
    if prelude.strip():
        parts.append(prelude.strip() + "\n")
    entries: list[tuple[AttachPoint, str]] = []
    for index, choice in enumerate(choices):
        parts.append(_probe_function(index, choice, layout, output))
        call = f"ft_probe_{index}({{args}})"
        for n, point in enumerate(choice.chosen):
            fn = f"ft_entry_{index}_{n}"
            parts.append(point.entry(fn, call, choice.probe.params))
            entries.append((point, fn))
    return Program("\n\n".join(parts) + "\n", tuple(entries))
