"""Declarative probes: what a source observes, as ordered ways to observe it.

A :class:`Probe` names what it observes ("entry of sync(2)") and lists
alternatives, best first. An alternative is one attach point or several that
together observe the same thing (``clone`` and ``clone3`` entries). Each
attach point knows which kernel feature it needs, whether its target exists
here, the C entry function bcc compiles for it, and how to fetch the probe's
parameters in its own context. :func:`flowtrace.plan.resolve` picks the first
alternative that fits the running kernel.

The probe body is C that runs with the parameters in scope as local
variables and, for probes that emit, ``e``: the event record, with its
automatically filled fields already set. ``return 0;`` in the body skips the
event. Each attach point fetches parameters its own way; ``fields`` maps a
parameter to another C expression in that point's context (``args`` for
tracepoints, ``ctx`` for kprobes and uprobes, the signature's names for
fentry), so one body serves every alternative.

Probes of one source that must agree on a method (the issue and completion
probes of a disk request must key requests the same way) label their
alternatives with :class:`Scheme`; :func:`flowtrace.plan.resolve` then picks
one scheme for all of them.
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from . import kernel, userspace
from .errors import AttachError, one_line

__all__ = [
    "Alternative",
    "AttachPoint",
    "Fentry",
    "Fexit",
    "Kprobe",
    "Kretprobe",
    "Param",
    "PerfEvent",
    "Probe",
    "RawTracepoint",
    "Scheme",
    "Tracepoint",
    "Uprobe",
    "Uretprobe",
    "Usdt",
    "syscall_entry_points",
    "syscall_exit_points",
]

# Registers holding syscall arguments inside the pt_regs a syscall wrapper gets.
_SYSCALL_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}.get(
    platform.machine(), "sys_"
)
_SYSCALL_ARG_REGS = {
    "x86_64": ("di", "si", "dx", "r10", "r8", "r9"),
    "aarch64": tuple(f"regs[{i}]" for i in range(6)),
}.get(platform.machine(), ())


Fields = Mapping[str, str] | tuple[tuple[str, str], ...]
"""Parameter name -> C expression fetching it at one attach point."""


@dataclass(frozen=True)
class Param:
    """A probe parameter: a C local the body can use, e.g. ``Param("count", "u64")``."""

    name: str
    c_type: str = "u64"


class AttachPoint(ABC):
    """One place in the kernel or a program where a BPF function attaches."""

    feature: ClassVar[str]
    """The :func:`flowtrace.kernel.features` entry this kind needs."""

    kernel_headers: ClassVar[bool] = True
    """Whether its C needs the kernel's own headers (``linux/sched.h``):
    kernel functions and perf events do; tracepoints, uprobes and USDT
    probes do not, and their programs compile some 0.4 s faster without."""

    def needs_kernel_headers(self) -> bool:
        """Whether the program must include the kernel's own headers for it."""
        return self.kernel_headers

    @abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``tracepoint syscalls:sys_enter_sync``."""

    def missing(self) -> str | None:
        """Why the target does not exist on this system, or None when it does."""
        return None

    @abstractmethod
    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        """C for the entry function ``fn``; ``call`` is the body call with a
        ``{args}`` placeholder for the comma-separated parameter expressions."""

    def attach(self, bpf: Any, fn: str) -> None:  # noqa: B027 - optional hook
        """Attach the compiled function (kinds bcc attaches on load do nothing)."""

    def detach(self, bpf: Any, fn: str) -> None:  # noqa: B027 - optional hook
        """Undo :meth:`attach` for what bcc does not detach by itself (an XDP
        link, a raw socket); safe when the attach failed half-way or never ran."""

    def usdt_contexts(self, fn: str) -> list[Any]:
        """bcc USDT contexts to pass at load time (USDT only)."""
        return []

    def __post_init__(self) -> None:
        # freeze a mapping given as ``fields`` into pairs, so points stay hashable
        fields = getattr(self, "fields", None)
        if fields is not None:
            object.__setattr__(self, "fields", tuple(dict(fields).items()))

    def fetch(self, params: Sequence[Param], default: Sequence[str]) -> list[str]:
        """The expression of each parameter: its ``fields`` entry, else ``default``."""
        exprs = dict(getattr(self, "fields", ()))
        return [exprs.get(p.name, d) for p, d in zip(params, default, strict=True)]



def _b(text: str | None) -> bytes:
    """bcc takes names as bytes."""
    return (text or "").encode()


def _pt_regs_entry(fn: str, fetch: Sequence[str], call: str) -> str:
    return f"int {fn}(struct pt_regs *ctx) {{\n    return {call.format(args=', '.join(fetch))};\n}}"


def _regs_arg(i: int) -> str:
    return f"PT_REGS_PARM{i + 1}(ctx)"


@dataclass(frozen=True)
class Tracepoint(AttachPoint):
    """A static tracepoint; parameters are read as ``args-><name>`` unless
    ``fields`` maps a parameter to another expression over ``args``."""

    category: str
    event: str
    fields: Fields = ()
    feature: ClassVar[str] = "tracepoints"
    kernel_headers: ClassVar[bool] = False

    def describe(self) -> str:
        return f"tracepoint {self.category}:{self.event}"

    def missing(self) -> str | None:
        if kernel.tracepoint_exists(self.category, self.event):
            return None
        return f"no tracepoint {self.category}:{self.event} in this kernel"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["args", *self.fetch(params, [f"args->{p.name}" for p in params])]
        return (
            f"TRACEPOINT_PROBE({self.category}, {self.event}) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )


@dataclass(frozen=True)
class RawTracepoint(AttachPoint):
    """A raw tracepoint; parameter ``i`` is ``ctx->args[i]``.

    Set ``reads_kernel_structs`` when ``fields`` dereference kernel structs:
    the point is then only used where the headers match the running kernel.
    """

    name: str
    fields: Fields = ()
    reads_kernel_structs: bool = False
    feature: ClassVar[str] = "raw_tracepoints"
    kernel_headers: ClassVar[bool] = False

    def describe(self) -> str:
        return f"raw tracepoint {self.name}"

    def needs_kernel_headers(self) -> bool:
        return self.reads_kernel_structs

    def missing(self) -> str | None:
        if kernel.tracepoint_category(self.name) is None:
            return f"no tracepoint {self.name} in this kernel"
        return kernel.struct_offsets_untrusted() if self.reads_kernel_structs else None

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        default = [f"({p.c_type})ctx->args[{i}]" for i, p in enumerate(params)]
        fetch = ["ctx", *self.fetch(params, default)]
        return (
            f"RAW_TRACEPOINT_PROBE({self.name}) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )


@dataclass(frozen=True)
class _KernelFunction(AttachPoint):
    """Shared resolution for probes on a kernel function or a syscall's.

    Set ``reads_kernel_structs`` when ``fields`` dereference kernel structs
    (``req->__data_len``): the point is then only used where bcc compiles
    with the running kernel's own headers, since other headers give wrong
    field offsets.
    """

    function: str = ""
    syscall: str = ""
    fields: Fields = ()
    reads_kernel_structs: bool = False

    def target(self) -> str | None:
        if self.syscall:
            return kernel.syscall_function(self.syscall)
        return kernel.find_kernel_function(self.function)

    def name(self) -> str:
        """The symbol attached to: resolved in /proc/kallsyms when it is there."""
        return self.target() or self.declared()

    def declared(self) -> str:
        """The function as declared (a syscall's under this architecture's
        prefix); descriptions use it, so describing a plan reads no kallsyms."""
        return self.function or f"{_SYSCALL_PREFIX}{self.syscall}"

    def missing(self) -> str | None:
        if self.target() is None:
            what = f"syscall {self.syscall}" if self.syscall else self.function
            return f"no kernel function for {what} in /proc/kallsyms"
        return kernel.struct_offsets_untrusted() if self.reads_kernel_structs else None

    def syscall_fetch(self, regs: str, params: Sequence[Param]) -> list[str]:
        """Expressions reading syscall arguments from the wrapper's pt_regs."""
        fetch = []
        for i, p in enumerate(params):
            reg = _SYSCALL_ARG_REGS[i]
            fetch.append(
                f"({{ u64 __v = 0; bpf_probe_read_kernel(&__v, sizeof(__v), &{regs}->{reg}); "
                f"({p.c_type})__v; }})"
            )
        return fetch


@dataclass(frozen=True)
class Kprobe(_KernelFunction):
    """A kprobe on ``function`` (renamed ``.isra``-style variants are found)
    or on the function implementing ``syscall``."""

    feature: ClassVar[str] = "kprobes"

    def describe(self) -> str:
        return f"kprobe {self.declared()}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        if self.syscall:
            regs = "((struct pt_regs *)PT_REGS_PARM1(ctx))"
            default = self.syscall_fetch(regs, params)
        else:
            default = [_regs_arg(i) for i in range(len(params))]
        return _pt_regs_entry(fn, ["ctx", *self.fetch(params, default)], call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_kprobe(event=_b(self.target()), fn_name=_b(fn))


@dataclass(frozen=True)
class Kretprobe(_KernelFunction):
    """A kretprobe; every parameter is the return value."""

    feature: ClassVar[str] = "kprobes"

    def describe(self) -> str:
        return f"kretprobe {self.declared()}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        default = [f"({p.c_type})PT_REGS_RC(ctx)" for p in params]
        return _pt_regs_entry(fn, ["ctx", *self.fetch(params, default)], call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_kretprobe(event=_b(self.target()), fn_name=_b(fn))


@dataclass(frozen=True)
class Fentry(_KernelFunction):
    """An fentry (BPF trampoline) probe; attached by bcc on load.

    For a plain function, ``signature`` is its C parameter list in order
    (``("struct file *file", "char *buf", "size_t count")``) and parameters
    are taken by name.
    """

    signature: tuple[str, ...] = ()
    feature: ClassVar[str] = "fentry"
    macro: ClassVar[str] = "KFUNC_PROBE"

    def describe(self) -> str:
        return f"fentry {self.declared()}"

    def missing(self) -> str | None:
        target = self.target()
        if target is not None and "." in target:
            return f"fentry cannot attach to the compiler-renamed {target}"
        return super().missing()

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        if self.syscall:
            sig = ["struct pt_regs *regs"]
            fetch = self.fetch(params, self.syscall_fetch("regs", params))
        else:
            sig = list(self.signature)
            fetch = self.fetch(params, [p.name for p in params])
        head = ", ".join([self.name(), *sig])
        return (
            f"{self.macro}({head}) {{\n"
            f"    return {call.format(args=', '.join(['ctx', *fetch]))};\n}}"
        )


@dataclass(frozen=True)
class Fexit(Fentry):
    """An fexit probe; ``signature`` must end with the return value (``"int ret"``)."""

    macro: ClassVar[str] = "KRETFUNC_PROBE"

    def describe(self) -> str:
        return f"fexit {self.declared()}"


@dataclass(frozen=True)
class Uprobe(AttachPoint):
    """A uprobe on ``symbol`` in ``binary`` (a path, or a library name like ``"c"``);
    parameter ``i`` is the function's argument ``i``.

    An IFUNC symbol (glibc's ``strlen``) is followed to the implementation its
    resolver picks on this machine, since the symbol itself only runs the
    resolver, once per process; ``follow_ifunc=False`` probes the symbol.
    ``pid`` limits the probe to one process (-1: every process).
    """

    binary: str
    symbol: str
    pid: int = -1
    fields: Fields = ()
    follow_ifunc: bool = True
    feature: ClassVar[str] = "uprobes"
    kind: ClassVar[str] = "uprobe"
    kernel_headers: ClassVar[bool] = False

    def describe(self) -> str:
        text = f"{self.kind} {self.binary}:{self.symbol}"
        try:
            function = userspace.user_function(self.binary, self.symbol, self.follow_ifunc)
        except LookupError:
            return text
        return f"{text} ({function.detail})" if function.detail else text

    def missing(self) -> str | None:
        try:
            userspace.user_function(self.binary, self.symbol, self.follow_ifunc)
        except LookupError as exc:
            return str(exc)
        return None

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        default = [_regs_arg(i) for i in range(len(params))]
        return _pt_regs_entry(fn, ["ctx", *self.fetch(params, default)], call)

    def _where(self) -> dict[str, Any]:
        function = userspace.user_function(self.binary, self.symbol, self.follow_ifunc)
        if function.address is None:
            return {"name": _b(function.path), "sym": _b(self.symbol)}
        return {"name": _b(function.path), "addr": function.address}

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_uprobe(**self._where(), fn_name=_b(fn), pid=self.pid)


@dataclass(frozen=True)
class Uretprobe(Uprobe):
    """A uretprobe; every parameter is the return value."""

    kind: ClassVar[str] = "uretprobe"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        default = [f"({p.c_type})PT_REGS_RC(ctx)" for p in params]
        return _pt_regs_entry(fn, ["ctx", *self.fetch(params, default)], call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_uretprobe(**self._where(), fn_name=_b(fn), pid=self.pid)


@dataclass(frozen=True)
class Usdt(AttachPoint):
    """A USDT probe ``name`` (of ``provider``, when given) in ``binary`` (a
    path) or in the process ``pid``.

    Parameters map to probe arguments in order unless ``arguments`` gives the
    1-based argument number of each parameter. A parameter's C type must
    have its argument's size (``s32`` for a 4-byte int, ``u64`` for a
    pointer): bcc reads nothing into a variable of another size. A probe
    behind a semaphore (most runtimes' probes) needs ``pid``.
    """

    name: str
    binary: str = ""
    pid: int | None = None
    arguments: tuple[int, ...] = ()
    provider: str = ""
    fields: Fields = ()
    feature: ClassVar[str] = "usdt"
    kernel_headers: ClassVar[bool] = False

    def probe_name(self) -> str:
        """``provider:name``, or ``name`` when no provider is given."""
        return f"{self.provider}:{self.name}" if self.provider else self.name

    def describe(self) -> str:
        where = self.binary or f"pid {self.pid}"
        return f"usdt {where} {self.probe_name()}"

    def _context(self) -> Any:
        from bcc import USDT

        return USDT(path=self.binary or None, pid=self.pid)

    def missing(self) -> str | None:
        where = self.binary or f"process {self.pid}"
        if not self.binary and not os.path.exists(f"/proc/{self.pid}"):
            return f"no process {self.pid}"
        try:
            found = [
                p
                for p in self._context().enumerate_probes()
                if p.name.decode() == self.name and self.provider in ("", p.provider.decode())
            ]
        except Exception as exc:
            if "failed to instrument" in str(exc):  # bcc found no USDT note at all
                return f"{where} has no USDT probes"
            return f"cannot read the USDT probes of {where}: {one_line(exc)}"
        if not found:
            return f"{where} has no USDT probe {self.probe_name()}"
        if self.pid is None and any(p.semaphore for p in found):
            return (
                f"USDT probe {self.probe_name()} of {where} is enabled by a semaphore, "
                "which bcc sets only in a given process: give the pid to trace"
            )
        return None

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        numbers = self.arguments or tuple(range(1, len(params) + 1))
        default = [
            f"({{ {p.c_type} __v = 0; bpf_usdt_readarg({n}, ctx, &__v); __v; }})"
            for n, p in zip(numbers, params, strict=True)
        ]
        return _pt_regs_entry(fn, ["ctx", *self.fetch(params, default)], call)

    def usdt_contexts(self, fn: str) -> list[Any]:
        try:
            context = self._context()
            context.enable_probe(probe=self.probe_name(), fn_name=fn)
        except Exception as exc:
            raise AttachError(f"{self.describe()}: {one_line(exc)}") from exc
        return [context]


@dataclass(frozen=True)
class PerfEvent(AttachPoint):
    """A perf event sampled on every CPU (default: the CPU clock at 99 Hz);
    parameters come from ``fields`` (expressions over ``ctx``), else zero."""

    type: int = 1  # PERF_TYPE_SOFTWARE
    config: int = 0  # PERF_COUNT_SW_CPU_CLOCK
    sample_freq: int = 99
    fields: Fields = ()
    feature: ClassVar[str] = "perf_events"

    def describe(self) -> str:
        return f"perf event type={self.type} config={self.config} at {self.sample_freq} Hz"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["ctx", *self.fetch(params, [f"({p.c_type})0" for p in params])]
        return (
            f"int {fn}(struct bpf_perf_event_data *ctx) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_perf_event(
            ev_type=self.type, ev_config=self.config, fn_name=_b(fn), sample_freq=self.sample_freq
        )


Alternative = tuple[AttachPoint, ...]


@dataclass(frozen=True, init=False)
class Scheme:
    """An alternative of a probe that belongs to a named method.

    Probes of one source whose alternatives carry schemes are resolved
    together: one scheme is chosen for all of them (the first, in declaration
    order, that every probe using it can attach), so state they share, like
    a start time keyed by request, is keyed the same way on both sides. A
    probe with no alternative in the chosen scheme is not needed by it and
    is left out of the program.
    """

    name: str
    points: Alternative

    def __init__(self, name: str, *points: AttachPoint) -> None:
        if not points:
            raise ValueError(f"scheme {name!r} needs at least one attach point")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "points", points)


@dataclass(frozen=True, init=False)
class Probe:
    """What a source observes, the ordered ways to observe it, and the C body.

    ``alternatives`` are tried best first; each is one attach point, a
    sequence of points that together observe the thing, or a :class:`Scheme`
    (then every alternative must be one; ``schemes`` holds their names). With
    ``emits`` the body fills ``e`` (the event record) and the event is
    submitted after it; without, the body only updates maps (an entry probe
    storing a start time).
    """

    what: str
    alternatives: tuple[Alternative, ...]
    body: str
    params: tuple[Param, ...]
    emits: bool
    schemes: tuple[str, ...]

    def __init__(
        self,
        what: str,
        *alternatives: AttachPoint | Sequence[AttachPoint] | Scheme,
        body: str = "",
        params: Sequence[Param | str] = (),
        emits: bool = True,
    ) -> None:
        labelled = [a for a in alternatives if isinstance(a, Scheme)]
        if labelled and len(labelled) != len(alternatives):
            raise ValueError(f"{what}: label every alternative with a Scheme, or none")
        alts = tuple(
            a.points if isinstance(a, Scheme) else (a,) if isinstance(a, AttachPoint) else tuple(a)
            for a in alternatives
        )
        object.__setattr__(self, "what", what)
        object.__setattr__(self, "alternatives", alts)
        object.__setattr__(self, "body", body)
        object.__setattr__(
            self, "params", tuple(Param(p) if isinstance(p, str) else p for p in params)
        )
        object.__setattr__(self, "emits", emits)
        object.__setattr__(self, "schemes", tuple(a.name for a in labelled))


def syscall_entry_points(*syscalls: str) -> tuple[Alternative, ...]:
    """Alternatives observing entry of any of ``syscalls``: fentry, then
    kprobe on the syscall functions, then the ``sys_enter_*`` tracepoints."""
    return (
        tuple(Fentry(syscall=s) for s in syscalls),
        tuple(Kprobe(syscall=s) for s in syscalls),
        tuple(Tracepoint("syscalls", f"sys_enter_{s}") for s in syscalls),
    )


def syscall_exit_points(*syscalls: str) -> tuple[Alternative, ...]:
    """Alternatives observing return of ``syscalls``: kretprobe, then the
    ``sys_exit_*`` tracepoints. Declare one parameter, ``ret``."""
    return (
        tuple(Kretprobe(syscall=s) for s in syscalls),
        tuple(Tracepoint("syscalls", f"sys_exit_{s}") for s in syscalls),
    )
