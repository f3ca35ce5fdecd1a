"""``flowtrace doctor``: is this machine ready to trace, and what to fix.

One line per check, then a summary line. Run without root (or CAP_BPF and
CAP_PERFMON), the checks that need it (bpf() calls, tracefs) are reported
as ``skip`` instead of guessed: the kernel refuses this user, which says
nothing about what it offers root."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import kernel

__all__ = ["Check", "as_json_objects", "run_checks", "summary"]

_ROOT_FIX = "run as root (sudo flowtrace doctor)"
_NEEDS_ROOT = ("bpf", "tracepoints", "raw_tracepoints", "fentry", "ringbuf")
"""The kernel features only root can check (their test is a bpf() call or
tracefs, which refuse anyone else)."""

# Probe kinds flowtrace can do without (it falls back), and their remedy.
_OPTIONAL = {
    "kprobes": "needs a kernel with CONFIG_KPROBES; flowtrace falls back to tracepoints",
    "fentry": "needs a kernel with BPF trampolines and BTF; flowtrace falls back",
    "ringbuf": "needs Linux 5.8+; flowtrace falls back to the perf buffer",
    "btf": "needs CONFIG_DEBUG_INFO_BTF; only fentry/fexit need it",
    "raw_tracepoints": "",
    "uprobes": "needs CONFIG_UPROBE_EVENTS; libc and USDT probes need it",
    "usdt": "needs uprobes",
    "perf_events": "needs CONFIG_PERF_EVENTS; sampling sources need it",
}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ok, warn, fail, or skip (not
    checked: it needs root)."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status:>4}] {self.name}: {self.detail}"
        return text + (f" -- fix: {self.fix}" if self.fix else "")


def _privileges() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", "ok", "running as root")
    if kernel.privileged():
        return Check("privileges", "ok", "CAP_BPF and CAP_PERFMON")
    return Check("privileges", "fail", "not root, no CAP_BPF/CAP_PERFMON", _ROOT_FIX)


def _bcc() -> Check:
    try:
        import bcc
    except ImportError:
        return Check(
            "bcc", "fail", "not importable", "apt-get install python3-bpfcc; bash scripts/setup.sh"
        )
    return Check("bcc", "ok", f"version {getattr(bcc, '__version__', 'unknown')}")


def _headers() -> Check:
    headers = kernel.kernel_headers()
    release = os.uname().release
    if headers.match == "exact":
        return Check("kernel headers", "ok", f"exact ({headers.version}) at {headers.path}")
    if headers.match == "nearest":
        return Check(
            "kernel headers",
            "warn",
            f"nearest: {headers.version} for kernel {release}; struct offsets may differ",
            f"install linux-headers-{release} if your distribution has it",
        )
    return Check("kernel headers", "fail", f"missing for {release}", "bash scripts/setup.sh")


def _tracefs() -> Check:
    bcc_path = Path("/sys/kernel/debug/tracing")
    try:
        if (bcc_path / "events").is_dir():
            return Check("tracefs", "ok", f"at {bcc_path}")
    except PermissionError:
        return Check("tracefs", "skip", f"{bcc_path} is readable by root only", _ROOT_FIX)
    found = kernel.tracefs()
    detail = f"only at {found} (bcc reads {bcc_path})" if found else "not mounted"
    return Check("tracefs", "fail", detail, "mount -t debugfs debugfs /sys/kernel/debug")


def _feature(name: str) -> Check:
    feature = kernel.features()[name]
    if not feature.available and name in _NEEDS_ROOT and not kernel.privileged():
        return Check(name, "skip", f"not checked: needs root ({feature.detail})", _ROOT_FIX)
    if feature.available:
        return Check(name, "ok", feature.detail)
    if name in _OPTIONAL:
        return Check(name, "warn", f"unavailable: {feature.detail}", _OPTIONAL[name])
    return Check(
        name, "fail", f"unavailable: {feature.detail}", "run as root on a BPF-enabled kernel"
    )


def run_checks() -> list[Check]:
    """Every check, in report order."""
    checks = [_privileges(), _bcc(), _headers(), _tracefs()]
    return checks + [_feature(name) for name in kernel.features()]


def summary(checks: list[Check]) -> str:
    """One line after the checks: ready, what needs root, or how many failed."""
    failed = [c.name for c in checks if c.status == "fail"]
    if not kernel.privileged():
        skipped = [c.name for c in checks if c.status == "skip"]
        return (
            "not ready: tracing needs root (or CAP_BPF and CAP_PERFMON)"
            + (f"; {', '.join(skipped)} not checked" if skipped else "")
            + f"; {_ROOT_FIX}"
        )
    if failed:
        return f"not ready: {len(failed)} failed ({', '.join(failed)}); see each fix above"
    warned = [c.name for c in checks if c.status == "warn"]
    return "ready to trace" + (f" (warnings: {', '.join(warned)})" if warned else "")


def as_json_objects(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
