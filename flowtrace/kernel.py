"""What the running kernel can do, read from the kernel itself.

Every answer comes from a cheap, side-effect-free check (a file in sysfs or
tracefs, or a minimal ``bpf()`` call whose object is closed at once); nothing
here attaches a probe. Results that cannot change while a process runs are
cached.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Feature",
    "HeaderStatus",
    "features",
    "find_kernel_function",
    "kernel_headers",
    "mmapable_arrays",
    "privileged",
    "struct_offsets_untrusted",
    "syscall_function",
    "tracefs",
    "tracefs_unreadable",
    "tracepoint_category",
    "tracepoint_exists",
]

_TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
_EVENT_SOURCES = Path("/sys/bus/event_source/devices")

# bpf(2) commands, program and map types used by the probes below.
_BPF_MAP_CREATE = 0
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_KPROBE = 2
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_FENTRY = 24
_BPF_MAP_TYPE_ARRAY = 2
_BPF_MAP_TYPE_RINGBUF = 27
_BPF_F_MMAPABLE = 1 << 10
_ENOTSUPP = 524  # the kernel's internal "operation not supported"
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())


def tracefs() -> Path | None:
    """The tracefs directory bcc can use, or None when tracefs is not mounted
    (or not readable by this user).

    bcc 0.26 reads ``/sys/kernel/debug/tracing``; when only
    ``/sys/kernel/tracing`` is mounted, the latter is returned and the doctor
    reports the mismatch.
    """
    for path in reversed(_TRACEFS_CANDIDATES):
        try:
            if (path / "events").is_dir():
                return path
        except OSError:  # /sys/kernel/debug is root's only: not usable
            continue
    return None


def tracefs_unreadable() -> Path | None:
    """A tracefs directory this user may not look into (tracefs is root's
    only), or None when every candidate is readable or absent."""
    for path in _TRACEFS_CANDIDATES:
        try:
            (path / "events").is_dir()
        except PermissionError:
            return path
        except OSError:
            continue
    return None


_CAP_PERFMON = 38
_CAP_BPF = 39


@functools.cache
def privileged() -> bool:
    """Whether this process may trace: root, or CAP_BPF and CAP_PERFMON.
    Without, what the kernel offers cannot be told from what it refuses this
    user (bpf() says EPERM, tracefs is unreadable either way)."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    caps = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff")), "0")
    need = 1 << _CAP_BPF | 1 << _CAP_PERFMON
    return int(caps, 16) & need == need


def tracepoint_exists(category: str, event: str) -> bool:
    """Whether the tracepoint ``category:event`` exists (its format file does)."""
    root = tracefs()
    return root is not None and (root / "events" / category / event / "format").exists()


def tracepoint_category(event: str) -> str | None:
    """The category of the tracepoint named ``event`` (raw tracepoints are
    named without one), or None when no category has it."""
    root = tracefs()
    if root is None:
        return None
    found = sorted((root / "events").glob(f"*/{event}/format"))
    return found[0].parent.parent.name if found else None


@functools.cache
def _kallsyms() -> bytes:
    """/proc/kallsyms as read once (some 5 MB here): searched, never parsed
    into a set, which would cost four times the memory and a parse."""
    try:
        return Path("/proc/kallsyms").read_bytes()
    except OSError:
        return b""


def _functions(name_pattern: bytes) -> list[str]:
    """Kernel function (text) symbols whose whole name matches ``name_pattern``."""
    pattern = re.compile(rb" [tT] (" + name_pattern + rb")[\t\n]")
    return [found.decode() for found in pattern.findall(_kallsyms())]


def find_kernel_function(name: str) -> str | None:
    """The traceable kernel symbol for ``name``: exact, else a compiler-renamed
    variant (``name.isra.0``, ``name.constprop.0``, ...), else None.

    ``.cold`` parts (a function's rarely run code, split off by the compiler)
    are never the function's entry and are not returned.
    """
    symbols = _functions(re.escape(name.encode()) + rb"(?:\.[\w.]+)?")
    if name in symbols:
        return name
    variants = sorted(s for s in symbols if ".cold" not in s[len(name) :])
    return variants[0] if variants else None


_SYSCALL_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__se_sys_", "sys_")


def syscall_function(syscall: str) -> str | None:
    """The kernel function implementing ``syscall`` (``__x64_sys_sync``...)."""
    prefixes = b"|".join(p.encode() for p in _SYSCALL_PREFIXES)
    found = set(_functions(b"(?:" + prefixes + b")" + re.escape(syscall.encode())))
    return next((p + syscall for p in _SYSCALL_PREFIXES if p + syscall in found), None)


class _BpfAttr(ctypes.Structure):
    """The prefix of ``union bpf_attr`` used by BPF_PROG_LOAD / BPF_MAP_CREATE."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("_reserved", ctypes.c_uint8 * 64),
    ]


def _bpf(cmd: int, attr: _BpfAttr) -> tuple[int, int]:
    """Call bpf(2); returns (result, errno). Closes any fd it gets back."""
    if _SYS_BPF is None:
        return -1, errno.ENOSYS
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)))
    err = ctypes.get_errno() if result < 0 else 0
    if result >= 0 and cmd in (_BPF_MAP_CREATE, _BPF_PROG_LOAD):
        os.close(result)
    return result, err


def _load_minimal_program(prog_type: int, attach_type: int = 0, btf_id: int = 0) -> int:
    """Try to load ``r0 = 0; exit``; returns the errno (0 when it loaded)."""
    insns = (ctypes.c_uint64 * 2)(0xB7, 0x95)
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = _BpfAttr(prog_type=prog_type, insn_cnt=2, expected_attach_type=attach_type)
    attr.insns = ctypes.addressof(insns)
    attr.license = ctypes.addressof(license_)
    attr.attach_btf_id = btf_id
    return _bpf(_BPF_PROG_LOAD, attr)[1]


@dataclass(frozen=True)
class Feature:
    """Whether a probe kind or facility works here, and why (or why not)."""

    name: str
    available: bool
    detail: str


def _feature_bpf() -> Feature:
    err = _load_minimal_program(_BPF_PROG_TYPE_KPROBE)
    if err == 0:
        return Feature("bpf", True, "bpf() loads programs")
    return Feature("bpf", False, f"bpf() program load failed: {errno.errorcode.get(err, err)}")


def _feature_event_source(name: str, kind: str, tracefs_file: str) -> Feature:
    root = tracefs()
    if (_EVENT_SOURCES / name).is_dir() or (root is not None and (root / tracefs_file).exists()):
        return Feature(kind, True, f"perf event source '{name}' present")
    return Feature(
        kind,
        False,
        f"no '{name}' perf event source and no {tracefs_file} (kernel built without it)",
    )


def _feature_fentry() -> Feature:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return Feature("fentry", False, "no kernel BTF (/sys/kernel/btf/vmlinux)")
    # A tracing program with a bogus BTF id is refused with EINVAL where the
    # program type exists, and with EPERM where the kernel lacks it.
    err = _load_minimal_program(_BPF_PROG_TYPE_TRACING, _BPF_TRACE_FENTRY, btf_id=1)
    if err in (errno.EPERM, errno.EOPNOTSUPP, _ENOTSUPP):
        return Feature("fentry", False, "the kernel refuses tracing (fentry/fexit) programs")
    return Feature("fentry", True, "tracing programs load; BTF present")


def _try_map(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0
) -> int:
    """Create a map of this kind and close it; returns the errno (0 when created)."""
    attr = _BpfAttr()
    words = ctypes.cast(ctypes.byref(attr), ctypes.POINTER(ctypes.c_uint32))
    words[0], words[1], words[2], words[3], words[4] = (
        map_type, key_size, value_size, max_entries, flags
    )  # fmt: skip
    return _bpf(_BPF_MAP_CREATE, attr)[1]


def _feature_ringbuf() -> Feature:
    err = _try_map(_BPF_MAP_TYPE_RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE"))
    if err == 0:
        return Feature("ringbuf", True, "BPF ring buffer maps can be created")
    return Feature("ringbuf", False, f"ring buffer map refused: {errno.errorcode.get(err, err)}")


@functools.cache
def mmapable_arrays() -> bool:
    """Whether this kernel lets user space map BPF arrays into its memory
    (``BPF_F_MMAPABLE``, Linux 5.5+): tried by creating a one-element array
    (False without root)."""
    return _try_map(_BPF_MAP_TYPE_ARRAY, 4, 8, 1, _BPF_F_MMAPABLE) == 0


def _feature_tracepoints() -> Feature:
    root = tracefs()
    if root is None and (unreadable := tracefs_unreadable()) is not None:
        return Feature(
            "tracepoints", False, f"tracefs at {unreadable} is readable by root only: run as root"
        )
    if root is None:
        return Feature(
            "tracepoints",
            False,
            "tracefs is not mounted: mount -t debugfs debugfs /sys/kernel/debug",
        )
    return Feature("tracepoints", True, f"tracefs at {root}")


def _feature_perf_events() -> Feature:
    if (
        Path("/proc/sys/kernel/perf_event_paranoid").exists()
        and (_EVENT_SOURCES / "software").is_dir()
    ):
        return Feature("perf_events", True, "software and hardware perf events")
    return Feature("perf_events", False, "kernel built without perf events")


def _feature_btf() -> Feature:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Feature("btf", True, "/sys/kernel/btf/vmlinux")
    return Feature("btf", False, "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF off)")


@functools.cache
def features() -> dict[str, Feature]:
    """Probe kinds and facilities of the running kernel, by name.

    Names: bpf, tracepoints, raw_tracepoints, kprobes, fentry, uprobes, usdt,
    perf_events, ringbuf, btf. Root is needed for the bpf() based checks.
    """
    bpf = _feature_bpf()
    uprobes = _feature_event_source("uprobe", "uprobes", "uprobe_events")
    found = [
        bpf,
        _feature_tracepoints(),
        Feature("raw_tracepoints", bpf.available, bpf.detail),
        _feature_event_source("kprobe", "kprobes", "kprobe_events"),
        _feature_fentry() if bpf.available else Feature("fentry", False, bpf.detail),
        uprobes,
        Feature("usdt", uprobes.available, "USDT probes attach as uprobes"),
        _feature_perf_events(),
        _feature_ringbuf() if bpf.available else Feature("ringbuf", False, bpf.detail),
        _feature_btf(),
    ]
    return {f.name: f for f in found}


@dataclass(frozen=True)
class HeaderStatus:
    """Kernel headers bcc will compile against.

    ``match`` is "exact" (headers of the running kernel), "nearest" (another
    version wired up by flowtrace's setup) or "missing".
    """

    match: str
    version: str | None
    path: Path


def kernel_headers() -> HeaderStatus:
    release = os.uname().release
    build = Path("/lib/modules") / release / "build"
    if not (build / "include").is_dir():
        return HeaderStatus("missing", None, build)
    version = None
    utsrelease = build / "include" / "generated" / "utsrelease.h"
    if utsrelease.exists():
        found = re.search(r'UTS_RELEASE\s+"([^"]+)"', utsrelease.read_text())
        version = found.group(1) if found else None
    if version is None:
        version = build.resolve().name.removeprefix("linux-headers-")
    return HeaderStatus("exact" if version == release else "nearest", version, build)


def struct_offsets_untrusted() -> str | None:
    """Why reading kernel struct fields would give wrong values here, or None.

    Struct offsets come from the kernel headers bcc compiles against; they
    are only right when those headers belong to the running kernel.
    """
    headers = kernel_headers()
    if headers.match == "exact":
        return None
    release = os.uname().release
    found = f"headers of {headers.version}" if headers.version else "no kernel headers"
    return (
        f"reads kernel struct fields, but bcc compiles with {found} for kernel "
        f"{release}, so field offsets would be wrong"
    )
