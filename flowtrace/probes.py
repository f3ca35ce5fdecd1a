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
event.
"""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from . import kernel

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
    "Tracepoint",
    "Uprobe",
    "Uretprobe",
    "Usdt",
    "syscall_entry",
    "syscall_exit",
]

# Registers holding syscall arguments inside the pt_regs a syscall wrapper gets.
_SYSCALL_ARG_REGS = {
    "x86_64": ("di", "si", "dx", "r10", "r8", "r9"),
    "aarch64": tuple(f"regs[{i}]" for i in range(6)),
}.get(platform.machine(), ())


@dataclass(frozen=True)
class Param:
    """A probe parameter: a C local the body can use, e.g. ``Param("count", "u64")``."""

    name: str
    c_type: str = "u64"


class AttachPoint(ABC):
    """One place in the kernel or a program where a BPF function attaches."""

    feature: ClassVar[str]
    """The :func:`flowtrace.kernel.features` entry this kind needs."""

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

    def usdt_contexts(self, fn: str) -> list[Any]:
        """bcc USDT contexts to pass at load time (USDT only)."""
        return []


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
    fields: tuple[tuple[str, str], ...] = ()
    feature: ClassVar[str] = "tracepoints"

    def describe(self) -> str:
        return f"tracepoint {self.category}:{self.event}"

    def missing(self) -> str | None:
        if kernel.tracepoint_exists(self.category, self.event):
            return None
        return f"no tracepoint {self.category}:{self.event} in this kernel"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        exprs = dict(self.fields)
        fetch = ["args"] + [exprs.get(p.name, f"args->{p.name}") for p in params]
        return (
            f"TRACEPOINT_PROBE({self.category}, {self.event}) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )


@dataclass(frozen=True)
class RawTracepoint(AttachPoint):
    """A raw tracepoint; parameter ``i`` is ``ctx->args[i]``."""

    name: str
    feature: ClassVar[str] = "raw_tracepoints"

    def describe(self) -> str:
        return f"raw tracepoint {self.name}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["ctx"] + [f"({p.c_type})ctx->args[{i}]" for i, p in enumerate(params)]
        return (
            f"RAW_TRACEPOINT_PROBE({self.name}) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )


@dataclass(frozen=True)
class _KernelFunction(AttachPoint):
    """Shared resolution for probes on a kernel function or a syscall's."""

    function: str = ""
    syscall: str = ""

    def target(self) -> str | None:
        if self.syscall:
            return kernel.syscall_function(self.syscall)
        return kernel.find_kernel_function(self.function)

    def name(self) -> str:
        return self.target() or self.function or f"sys_{self.syscall}"

    def missing(self) -> str | None:
        if self.target() is None:
            what = f"syscall {self.syscall}" if self.syscall else self.function
            return f"no kernel function for {what} in /proc/kallsyms"
        return None

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
        return f"kprobe {self.name()}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        if self.syscall:
            regs = "((struct pt_regs *)PT_REGS_PARM1(ctx))"
            return _pt_regs_entry(fn, ["ctx", *self.syscall_fetch(regs, params)], call)
        return _pt_regs_entry(fn, ["ctx"] + [_regs_arg(i) for i in range(len(params))], call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_kprobe(event=_b(self.target()), fn_name=_b(fn))


@dataclass(frozen=True)
class Kretprobe(_KernelFunction):
    """A kretprobe; every parameter is the return value."""

    feature: ClassVar[str] = "kprobes"

    def describe(self) -> str:
        return f"kretprobe {self.name()}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["ctx"] + [f"({p.c_type})PT_REGS_RC(ctx)" for p in params]
        return _pt_regs_entry(fn, fetch, call)

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
        return f"fentry {self.name()}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        if self.syscall:
            sig = ["struct pt_regs *regs"]
            fetch = self.syscall_fetch("regs", params)
        else:
            sig = list(self.signature)
            fetch = [p.name for p in params]
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
        return f"fexit {self.name()}"


@dataclass(frozen=True)
class Uprobe(AttachPoint):
    """A uprobe on ``symbol`` in ``binary`` (a path, or a library name like ``"c"``);
    parameter ``i`` is the function's argument ``i``."""

    binary: str
    symbol: str
    pid: int = -1
    feature: ClassVar[str] = "uprobes"

    def describe(self) -> str:
        return f"uprobe {self.binary}:{self.symbol}"

    def missing(self) -> str | None:
        from bcc import BPF

        path = BPF.find_library(_b(self.binary)) if "/" not in self.binary else _b(self.binary)
        if not path:
            return f"no binary or library {self.binary!r}"
        try:
            BPF._check_path_symbol(path, self.symbol.encode(), None, self.pid)
        except Exception:
            return f"no symbol {self.symbol} in {path.decode()}"
        return None

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        return _pt_regs_entry(fn, ["ctx"] + [_regs_arg(i) for i in range(len(params))], call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_uprobe(name=_b(self.binary), sym=_b(self.symbol), fn_name=_b(fn), pid=self.pid)


@dataclass(frozen=True)
class Uretprobe(Uprobe):
    """A uretprobe; every parameter is the return value."""

    def describe(self) -> str:
        return f"uretprobe {self.binary}:{self.symbol}"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["ctx"] + [f"({p.c_type})PT_REGS_RC(ctx)" for p in params]
        return _pt_regs_entry(fn, fetch, call)

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_uretprobe(
            name=_b(self.binary), sym=_b(self.symbol), fn_name=_b(fn), pid=self.pid
        )


@dataclass(frozen=True)
class Usdt(AttachPoint):
    """A USDT probe ``name`` in ``binary`` (a path) or in process ``pid``.

    Parameters map to probe arguments in order unless ``arguments`` gives the
    1-based argument number of each parameter.
    """

    name: str
    binary: str = ""
    pid: int | None = None
    arguments: tuple[int, ...] = ()
    feature: ClassVar[str] = "usdt"

    def describe(self) -> str:
        where = self.binary or f"pid {self.pid}"
        return f"usdt {where}:{self.name}"

    def missing(self) -> str | None:
        from bcc import USDT

        try:
            context = USDT(path=_b(self.binary) if self.binary else None, pid=self.pid)
            names = {p.name.decode() for p in context.enumerate_probes()}
        except Exception as exc:
            return f"cannot read USDT probes of {self.binary or self.pid}: {exc}"
        return None if self.name in names else f"no USDT probe {self.name!r} there"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        numbers = self.arguments or tuple(range(1, len(params) + 1))
        fetch = ["ctx"] + [
            f"({{ u64 __v = 0; bpf_usdt_readarg({n}, ctx, &__v); ({p.c_type})__v; }})"
            for n, p in zip(numbers, params, strict=True)
        ]
        return _pt_regs_entry(fn, fetch, call)

    def usdt_contexts(self, fn: str) -> list[Any]:
        from bcc import USDT

        context = USDT(path=_b(self.binary) if self.binary else None, pid=self.pid)
        context.enable_probe(probe=_b(self.name), fn_name=_b(fn))
        return [context]


@dataclass(frozen=True)
class PerfEvent(AttachPoint):
    """A perf event sampled on every CPU (default: the CPU clock at 99 Hz)."""

    type: int = 1  # PERF_TYPE_SOFTWARE
    config: int = 0  # PERF_COUNT_SW_CPU_CLOCK
    sample_freq: int = 99
    feature: ClassVar[str] = "perf_events"

    def describe(self) -> str:
        return f"perf event type={self.type} config={self.config} at {self.sample_freq} Hz"

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        return (
            f"int {fn}(struct bpf_perf_event_data *ctx) {{\n"
            f"    return {call.format(args='ctx')};\n}}"
        )

    def attach(self, bpf: Any, fn: str) -> None:
        bpf.attach_perf_event(
            ev_type=self.type, ev_config=self.config, fn_name=_b(fn), sample_freq=self.sample_freq
        )


Alternative = tuple[AttachPoint, ...]


@dataclass(frozen=True, init=False)
class Probe:
    """What a source observes, the ordered ways to observe it, and the C body.

    ``alternatives`` are tried best first; each is one attach point or a
    sequence of points that together observe the thing. With ``emits`` the
    body fills ``e`` (the event record) and the event is submitted after it;
    without, the body only updates maps (an entry probe storing a start time).
    """

    what: str
    alternatives: tuple[Alternative, ...]
    body: str
    params: tuple[Param, ...]
    emits: bool

    def __init__(
        self,
        what: str,
        *alternatives: AttachPoint | Sequence[AttachPoint],
        body: str = "",
        params: Sequence[Param | str] = (),
        emits: bool = True,
    ) -> None:
        alts = tuple((a,) if isinstance(a, AttachPoint) else tuple(a) for a in alternatives)
        object.__setattr__(self, "what", what)
        object.__setattr__(self, "alternatives", alts)
        object.__setattr__(self, "body", body)
        object.__setattr__(
            self, "params", tuple(Param(p) if isinstance(p, str) else p for p in params)
        )
        object.__setattr__(self, "emits", emits)


def syscall_entry(*syscalls: str) -> tuple[Alternative, ...]:
    """Alternatives observing entry of any of ``syscalls``: fentry, then
    kprobe on the syscall functions, then the ``sys_enter_*`` tracepoints."""
    return (
        tuple(Fentry(syscall=s) for s in syscalls),
        tuple(Kprobe(syscall=s) for s in syscalls),
        tuple(Tracepoint("syscalls", f"sys_enter_{s}") for s in syscalls),
    )


def syscall_exit(*syscalls: str) -> tuple[Alternative, ...]:
    """Alternatives observing return of ``syscalls``: kretprobe, then the
    ``sys_exit_*`` tracepoints. Declare one parameter, ``ret``."""
    return (
        tuple(Kretprobe(syscall=s) for s in syscalls),
        tuple(Tracepoint("syscalls", f"sys_exit_{s}") for s in syscalls),
    )
