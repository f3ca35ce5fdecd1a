"""The benchmark's tables and target checks, as text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import BASELINE

__all__ = ["render"]

FLOWTRACE = "ft-count"
"""Contender 1: the userspace path the targets are about."""


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def render(result: dict[str, Any]) -> list[str]:
    """The accounting table, the cost table, and the targets."""
    summary: dict[str, dict[str, Any]] = result["summary"]
    options = result["options"]
    rounds = options["rounds"]
    ratio_key = "vs_" + BASELINE.replace("-", "_")
    pace = f"at {options['rate']:,.0f}/s" if options["rate"] else "as fast as it can"
    lines = [
        f"$ {result['command']}",
        f"workload: {options['count']:,} getppid() calls, {pace}; untraced loop "
        f"{min(result['untraced_loop_s']):.3f}-{max(result['untraced_loop_s']):.3f} s; "
        f"{rounds} round(s), medians",
        f"flowtrace {result['machine'].get('commit') or '?'}"
        + (" with uncommitted changes" if result["machine"].get("uncommitted_changes") else "")
        + f"; {result['machine']['cpus']} CPUs, kernel {result['machine']['kernel']}, "
        f"load {result['machine']['loadavg'][0]:.2f} before / "
        f"{result['machine']['loadavg_after'][0]:.2f} after",
        "",
    ]
    rows = []
    for name, s in summary.items():
        rows.append(
            [
                name,
                _num(s["generated"], ",.0f"),
                _num(s["delivered"], ",.0f"),
                _num(s["dropped"], ",.0f"),
                ("yes" if s["adds_up"] else "NO")
                + ("" if not s["failed"] else f" ({s['failed']} failed)"),
                "ok" if s["answer_ok"] else "WRONG",
            ]
        )
    lines += _table(["contender", "generated", "delivered", "dropped", "adds up", "answer"], rows)
    lines.append("")
    rows = []
    for name, s in summary.items():
        r = s[ratio_key]
        rows.append(
            [
                name,
                _num(s["cpu_per_event_us"], ".3f"),
                _num(s["events_per_cpu_s"], ",.0f"),
                _num(r["events_per_cpu_s"], ".2f"),
                _num(s["drain_s"], ".3f"),
                _num(s["slowdown"], ".2f"),
                _num(s["startup_s"], ".2f"),
                _num(r["startup_s"], ".2f"),
                _num(s["peak_rss_mib"], ".0f"),
                _num(r["peak_rss_mib"], ".2f"),
            ]
        )
    lines += _table(
        [
            "contender",
            "us CPU/ev",
            "events/CPU-s",
            "x perf",
            "drain s",
            "slowdown",
            "start s",
            "x bcc",
            "RSS MiB",
            "x bcc",
        ],
        rows,
    )
    lines += [
        "",
        f"x perf: events per CPU-second against {BASELINE} (higher is better); x bcc: start-up",
        f"and peak RSS against {BASELINE}, the plain bcc program (lower is better); slowdown:",
        "the traced workload's loop time against the untraced run.",
    ]
    notes = [f"{name}: {note}" for name, s in summary.items() for note in s["notes"]]
    notes += [f"{name}: skipped, {why}" for name, why in result["skipped"].items()]
    if notes:
        lines += ["", "notes:", *(f"  {n}" for n in notes)]
    lines += ["", *targets(result)]
    return lines


def targets(result: dict[str, Any]) -> list[str]:
    """The issue's targets, each met, missed, or not measured in this run."""
    summary: dict[str, dict[str, Any]] = result["summary"]
    ft = summary.get(FLOWTRACE)
    ratio_key = "vs_" + BASELINE.replace("-", "_")
    lines = ["targets:"]

    def check(text: str, value: str, met: bool | None) -> None:
        verdict = "not measured" if met is None else ("met" if met else "MISSED")
        lines.append(f"  {text:<62} {value:>12}  {verdict}")

    def ratio(key: str, test: Callable[[float], bool]) -> tuple[str, bool | None]:
        value = ft[ratio_key][key] if ft else None
        return (
            _num(value, ".2f") + "x" if value is not None else "-",
            None if value is None else test(value),
        )

    per = ft["cpu_per_event_us"] if ft else None
    check(
        f"{FLOWTRACE}: consumer CPU per event <= 0.5 us",
        _num(per, ".3f") + " us",
        None if per is None else per <= 0.5,
    )
    check(
        f"{FLOWTRACE}: events per CPU-second >= 5x {BASELINE}",
        *ratio("events_per_cpu_s", lambda v: v >= 5),
    )
    flowtrace = [s for name, s in summary.items() if name.startswith("ft-")]
    check(
        "every flowtrace contender: delivered + dropped == generated",
        "",
        all(s["adds_up"] for s in flowtrace) if flowtrace else None,
    )
    burst = result["options"]["count"] >= 1_000_000 and not result["options"]["rate"]
    dropped = ft["dropped"] if ft else None
    check(
        f"{FLOWTRACE}: 1,000,000-event burst, default buffers, drops nothing",
        _num(dropped, ",.0f") + " dropped",
        None
        if dropped is None or not burst
        else (dropped == 0 and ft is not None and ft["adds_up"]),
    )
    check(f"{FLOWTRACE}: start-up <= 1.2x {BASELINE}", *ratio("startup_s", lambda v: v <= 1.2))
    check(f"{FLOWTRACE}: peak RSS <= 1.2x {BASELINE}", *ratio("peak_rss_mib", lambda v: v <= 1.2))
    for mine, theirs, python in KERNEL_PAIRS:
        for key, bound, what in (
            ("cpu_per_event_us", 2.0, "consumer CPU per event"),
            ("slowdown", 1.1, "workload slowdown"),
        ):
            value = _against(summary, mine, theirs, key)
            check(
                f"{mine}: {what} <= {bound}x {theirs}'s",
                _num(value, ".2f") + "x" if value is not None else "-",
                None if value is None else value <= bound,
            )
        value = _against(summary, mine, python, "startup_s")
        check(
            f"{mine}: start-up <= 1.1x {python}'s (pushdown costs <= 10%)",
            _num(value, ".2f") + "x" if value is not None else "-",
            None if value is None else value <= 1.1,
        )
    return lines


KERNEL_PAIRS = (
    ("ft-count-kernel", "bpftrace-count", "ft-count"),
    ("ft-hist-kernel", "bpftrace-hist", "ft-hist"),
)
"""Pipelines placed in the kernel, the bpftrace program doing the same, and
the same pipeline in Python."""


def _against(summary: dict[str, dict[str, Any]], mine: str, theirs: str, key: str) -> float | None:
    a = summary.get(mine, {}).get(key)
    b = summary.get(theirs, {}).get(key)
    return a / b if a is not None and b else None
