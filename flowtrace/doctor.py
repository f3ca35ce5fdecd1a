"""``flowtrace doctor``: is this machine ready to trace, and what to fix."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import kernel

__all__ = ["Check", "run_checks"]

_CAP_PERFMON = 38
_CAP_BPF = 39

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
    """One line of the report: ``status`` is ok, warn or fail."""

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
    status = Path("/proc/self/status").read_text()
    caps = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff")), 16
    )
    if caps >> _CAP_BPF & 1 and caps >> _CAP_PERFMON & 1:
        return Check("privileges", "ok", "CAP_BPF and CAP_PERFMON")
    return Check("privileges", "fail", "not root, no CAP_BPF/CAP_PERFMON", "run as root (sudo)")


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
    if (bcc_path / "events").is_dir():
        return Check("tracefs", "ok", f"at {bcc_path}")
    found = kernel.tracefs()
    detail = f"only at {found} (bcc reads {bcc_path})" if found else "not mounted"
    return Check("tracefs", "fail", detail, "mount -t debugfs debugfs /sys/kernel/debug")


def _feature(name: str) -> Check:
    feature = kernel.features()[name]
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


def as_json_objects(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
