"""A compiled bcc program and its attachments, freed on every exit path."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .codegen import LOST_MAP, Program
from .errors import AttachError, KernelError, one_line
from .probes import AttachPoint

__all__ = ["LoadedProgram"]

_LOADING = threading.Lock()
"""Held while a program is compiled, loaded and attached: bcc's compiler
(clang and LLVM inside libbcc) crashes the process when two threads compile
at once, as two pipelines started together in one process would."""


class LoadedProgram:
    """A compiled bcc program and its attachments.

    Attributes are filled as loading progresses, so :meth:`release` frees
    exactly what exists, whichever step failed or was cancelled.
    """

    def __init__(self) -> None:
        self.bpf: Any = None
        self.lost_before_start = 0
        self.usdt_contexts: list[Any] = []
        self.entries: tuple[tuple[AttachPoint, str], ...] = ()
        self.detached = False
        """True once :meth:`detach` ran: what the maps hold now is final
        (outputs that read counts from maps read the last of them then)."""

    def load(self, program: Program, cflags: Sequence[str]) -> None:
        """Compile and load ``program`` and attach its entry functions (bcc
        attaches tracepoints and USDT probes while it loads). Loads in one
        process happen one at a time: another thread's load waits."""
        with _LOADING:
            self._load(program, cflags)

    def _load(self, program: Program, cflags: Sequence[str]) -> None:
        try:
            from bcc import BPF
        except ImportError as exc:
            raise KernelError(
                "bcc is not importable: install python3-bpfcc and run flowtrace doctor"
            ) from exc
        # kept for the program's lifetime: a USDT context resets the probes'
        # semaphores when freed, and probes behind a semaphore stop firing
        self.usdt_contexts = [c for point, fn in program.entries for c in point.usdt_contexts(fn)]
        contexts = self.usdt_contexts
        # Held before construction: bcc's constructor may load programs and
        # attach (tracepoints, USDT) before it fails; release() frees those.
        self.bpf = BPF.__new__(BPF)
        try:
            self.bpf.__init__(
                text=program.text.encode(), usdt_contexts=contexts, cflags=list(cflags)
            )
        except Exception as exc:
            raise KernelError(f"bcc could not load the program: {one_line(exc)}") from exc
        self.entries = program.entries
        for point, fn in program.entries:
            try:
                point.attach(self.bpf, fn)
            except Exception as exc:
                raise AttachError(f"{point.describe()}: {one_line(exc)}") from exc

    def table(self, name: str) -> Any:
        """The program's map ``name`` (a bcc table)."""
        return self.bpf[name.encode()]

    def lost(self) -> int:
        """Records the program counted as not output (``ft_count_lost()``)
        and probe runs the kernel skipped (:meth:`skipped`), since
        :attr:`lost_before_start` was taken."""
        if self.bpf is None:
            return 0
        counted = int(self.table(LOST_MAP).sum(0).value)
        return counted + self.skipped() - self.lost_before_start

    def skipped(self) -> int:
        """Runs of the program's functions the kernel skipped because another
        BPF program was running on that CPU (a probe that fires inside one,
        from an interrupt for instance): each function's
        ``recursion_misses`` in ``/proc/self/fdinfo``. A skipped run emits
        nothing and updates no map, so it counts as lost."""
        if self.bpf is None:
            return 0
        return sum(_recursion_misses(function.fd) for function in self.bpf.funcs.values())

    def detach(self) -> None:
        """Detach every probe but keep the program and maps, so its output can
        be drained. Carries on past a failing detach and raises the first failure."""
        bpf = self.bpf
        if bpf is None:
            return
        self.detached = True
        failures: list[Exception] = []
        steps: list[tuple[Callable[..., object], list[Any]]] = [
            (bpf.detach_kprobe_event, list(bpf.kprobe_fds)),
            (bpf.detach_uprobe_event, list(bpf.uprobe_fds)),
            (bpf.detach_tracepoint, list(bpf.tracepoint_fds)),
            (bpf.detach_raw_tracepoint, list(bpf.raw_tracepoint_fds)),
            (bpf.detach_kfunc, list(bpf.kfunc_entry_fds)),
            (bpf.detach_kretfunc, list(bpf.kfunc_exit_fds)),
            (bpf.detach_lsm, list(bpf.lsm_fds)),
        ]
        for detach, names in steps:
            for name in names:
                try:
                    detach(name)
                except Exception as exc:
                    failures.append(exc)
        for point, fn in self.entries:
            try:
                point.detach(bpf, fn)
            except Exception as exc:
                failures.append(exc)
        for ev_type, ev_config in list(bpf.open_perf_events):
            try:
                bpf.detach_perf_event(ev_type, ev_config)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def detach_quietly(self) -> None:
        """:meth:`detach`, leaving a failing detach for :meth:`detach` or
        :meth:`release` to try again and report (for a stop request, which
        must not raise)."""
        with contextlib.suppress(Exception):
            self.detach()

    def release(self) -> None:
        """Detach everything and free the program; safe in any state, and the
        program is freed even when a detach fails."""
        bpf = self.bpf
        try:
            self.detach()
        finally:
            self.bpf = None
            self.usdt_contexts = []
            if bpf is not None:
                bpf.close()  # program fds and the module (maps)


def _recursion_misses(fd: int) -> int:
    """The kernel's count of skipped runs of the BPF program ``fd`` (0 where
    the kernel does not say)."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("recursion_misses:"):
                return int(line.split()[1])
    return 0
