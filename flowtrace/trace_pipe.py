"""A source over ``bpf_trace_printk()`` and the kernel's trace_pipe.

The tutorial's first lessons print from BPF with ``bpf_trace_printk()`` and
read the lines back from the shared ``trace_pipe`` (bcc's ``trace_print`` and
``trace_fields``). :class:`TracePipeSource` offers that path as a pipeline
source: probe bodies call ``ft_printk("format", args...)``, and each line
comes out as a :class:`TraceFields` event with the fields ``trace_fields()``
returns: task, pid, cpu, flags, ts and msg.

trace_pipe is shared by every program on the machine, and reading it
consumes what is read. So each source puts a marker of its own at the start
of every message, and, where the kernel routes ``bpf_trace_printk`` through
its ``bpf_trace:bpf_trace_printk`` event (Linux 5.10+), reads a private
tracefs instance that records only that event, filtered by the marker: it
sees only its own lines and takes no line from anyone reading the shared
pipe. Elsewhere it reads the shared ``trace_pipe`` and keeps only lines with
its marker; the lines of other programs it reads then are lost to them, as
with bcc's ``trace_print``.

Lines the kernel could not record (``CPU:N [LOST M EVENTS]``), lines
``bpf_trace_printk`` refused (a format the kernel rejects) and lines
carrying the source's marker that do not parse as a trace line are counted
as ``stats.lost``: every line the probes printed is emitted or counted.
Each read takes at most :data:`MAX_READS` chunks from the pipe, so a fast
printer cannot keep the event loop busy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from . import kernel
from .codegen import Program
from .context import SourceContext
from .errors import KernelError
from .kernel_source import LoadedProgram
from .plan import Choice, resolve
from .probes import AttachPoint, Probe
from .stages import Emit, Source

__all__ = ["MAX_READS", "TraceFields", "TracePipeSource", "parse_trace_line"]

_READ_SIZE = 1 << 16
MAX_READS = 16
"""Chunks (of 64 KiB) one read of the pipe takes at most; the rest waits
for the next read, after the event loop ran other tasks."""
_MAX_DRAIN_READS = 1024  # reads after detaching (the shared pipe may never run dry)
_WAKE_INTERVAL = 0.25  # seconds between checks when poll does not wake us
_INSTANCE_PREFIX = "flowtrace-"

_LINE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?:\d+|-+)\)\s+)?"  # the tgid column, with the record-tgid option
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s:]+)\s+)?"  # irq-info flags, absent without that option
    r"(?P<ts>\d+\.\d+):\s+"
    r"(?:[^:]*:\s)?"  # the event or symbol name ("bpf_trace_printk: ")
    r"(?P<msg>.*?)\s*$"
)
_LOST = re.compile(r"^CPU:\s*\d+\s+\[LOST (?P<count>\d+) EVENTS\]")


class TraceFields(msgspec.Struct, frozen=True, gc=False):
    """One ``bpf_trace_printk`` line, split like bcc's ``trace_fields()``.

    ``task`` is the printing task's command name when it printed, ``pid``
    the kernel's pid of that task (a thread id), ``cpu`` the CPU,
    ``flags`` the irq/preempt flags column, ``ts`` the trace clock in
    seconds, ``msg`` the message without the source's marker. Only ints and
    strs, so never part of a reference cycle (hence ``gc=False``).
    """

    kind: ClassVar[str] = "trace_fields"

    task: str
    pid: int
    cpu: int
    flags: str
    ts: float
    msg: str

    @property
    def comm(self) -> str:
        """The task's command name (``task``), named as in kernel events."""
        return self.task


def parse_trace_line(line: str) -> TraceFields | int | None:
    """Split one trace_pipe line.

    Returns the fields of a message line, the count of a ``[LOST N EVENTS]``
    line, or None for anything else (a blank line, a line of another format).
    """
    if (lost := _LOST.match(line)) is not None:
        return int(lost["count"])
    found = _LINE.match(line)
    if found is None:
        return None
    return TraceFields(
        found["task"],
        int(found["pid"]),
        int(found["cpu"]),
        found["flags"] or "",
        float(found["ts"]),
        found["msg"],
    )


_PRINTK = re.compile(r'\bft_printk\(\s*"')
_FAILED_MAP = "ft_printk_lost"
_SEPARATOR = "\t"  # ends the command name in a marked message (printk allows no control code)


def _literal_end(text: str, start: int) -> int:
    """The index of the quote closing the C string literal whose text starts at ``start``."""
    i = start
    while i < len(text) and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise ValueError("ft_printk: unterminated format string")
    return i


def _call_end(text: str, start: int) -> int:
    """The index of the parenthesis closing a call whose arguments go on at ``start``."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _literal_end(text, i + 1)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("ft_printk: unbalanced parentheses")


def _mark(body: str, marker: str) -> str:
    """Rewrite each ``ft_printk("fmt", args...)`` into a ``bpf_trace_printk``
    of ``"MARKER COMM\\tfmt"``: the source's marker, then the current
    task's command name (taken when the line is printed: the trace buffer
    fills in its own name for a task only later, so short-lived tasks
    would show as ``<...>``), then the message."""
    out: list[str] = []
    position = 0
    while (found := _PRINTK.search(body, position)) is not None:
        fmt_end = _literal_end(body, found.end())
        call_end = _call_end(body, fmt_end + 1)
        fmt = body[found.end() : fmt_end]
        rest = body[fmt_end + 1 : call_end]
        out.append(body[position : found.start()])
        out.append(
            "({ char ft_comm[16] = {}; bpf_get_current_comm(&ft_comm, sizeof(ft_comm)); "
            f'if (bpf_trace_printk("{marker} %s\\t{fmt}", ft_comm{rest}) < 0)'
            " ft_printk_failed(); })"
        )
        position = call_end + 1
    out.append(body[position:])
    return "".join(out)


class _Pipe:
    """The trace_pipe this source reads: a private tracefs instance recording
    only its marked ``bpf_trace_printk`` lines, or the shared pipe."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.root = kernel.tracefs()
        self.instance: Path | None = None
        self.fd = -1
        self.lost = 0
        self.more = False
        """Whether the last :meth:`read` stopped at :data:`MAX_READS` chunks."""
        self.private_failed = ""
        self._tail = b""

    def private_possible(self) -> bool:
        root = self.root
        return (
            root is not None
            and (root / "instances").is_dir()
            and (root / "events" / "bpf_trace" / "bpf_trace_printk" / "format").exists()
        )

    def describe(self) -> str:
        """Which pipe is read (after :meth:`open`)."""
        if self.root is None:
            return "no tracefs"
        if self.instance is not None:
            return f"a private tracefs instance, {self.instance}"
        shared = f"the shared {self.root / 'trace_pipe'} (its other readers lose what this reads)"
        return f"{shared}: {self.private_failed}" if self.private_failed else shared

    def open(self) -> None:
        """Open the private instance where possible, else the shared pipe."""
        if self.root is None:
            raise KernelError("tracefs is not mounted: mount -t debugfs debugfs /sys/kernel/debug")
        if self.private_possible():
            try:
                self._open_private(self.root / "instances")
                return
            except OSError as exc:
                self.close()
                self.private_failed = f"no private instance ({exc.strerror or exc})"
        self.fd = os.open(self.root / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def _open_private(self, instances: Path) -> None:
        _remove_stale_instances(instances)
        self.instance = instances / f"{_INSTANCE_PREFIX}{os.getpid()}-{self.marker}"
        self.instance.mkdir()
        event = self.instance / "events" / "bpf_trace" / "bpf_trace_printk"
        (event / "filter").write_text(f'bpf_string ~ "{self.marker} *"\n')
        percent = self.instance / "buffer_percent"
        if percent.exists():
            percent.write_text("0\n")  # wake a poll on every line, not at half full
        (event / "enable").write_text("1\n")
        self.fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def read(self) -> list[TraceFields]:
        """The complete lines carrying the marker in what is available now,
        up to :data:`MAX_READS` chunks (:attr:`more` tells whether it
        stopped there, with more possibly left)."""
        chunks: list[bytes] = []
        self.more = False
        while len(chunks) < MAX_READS:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            self.more = True
        if not chunks:
            return []
        data = self._tail + b"".join(chunks)
        *lines, self._tail = data.split(b"\n")
        return list(self._ours(lines))

    def _ours(self, lines: list[bytes]) -> Iterator[TraceFields]:
        prefix = self.marker + " "
        marker = prefix.encode()
        for raw in lines:
            parsed = parse_trace_line(raw.decode("utf-8", "replace"))
            if isinstance(parsed, int):
                self.lost += parsed
            elif parsed is None:
                if marker in raw:  # one of ours, in no format we know: counted
                    self.lost += 1
            elif parsed.msg.startswith(prefix):
                task, _, msg = parsed.msg[len(prefix) :].partition(_SEPARATOR)
                yield msgspec.structs.replace(parsed, task=task, msg=msg)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.instance is not None:
            _remove_instance(self.instance)
            self.instance = None


def _remove_instance(path: Path) -> None:
    with contextlib.suppress(OSError):
        (path / "events" / "bpf_trace" / "bpf_trace_printk" / "enable").write_text("0\n")
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def _remove_stale_instances(instances: Path) -> None:
    """Remove instances left by flowtrace processes that no longer exist."""
    for path in instances.glob(f"{_INSTANCE_PREFIX}*-*"):
        pid = path.name[len(_INSTANCE_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        try:
            _remove_instance(path)
        except OSError as exc:  # another process may be removing it too
            if exc.errno not in (errno.EBUSY, errno.ENOENT):
                raise


_HEADER = f"""\
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

BPF_PERCPU_ARRAY({_FAILED_MAP}, u64, 1);  // lines bpf_trace_printk refused

static __always_inline void ft_printk_failed(void) {{
    int zero = 0;
    u64 *failed = {_FAILED_MAP}.lookup(&zero);
    if (failed)
        (*failed)++;
}}
"""


class TracePipeSource(Source[TraceFields]):
    """Lines its probes print with ``ft_printk(...)``, as :class:`TraceFields`.

    Probe bodies run with the probe's parameters in scope (there is no event
    record ``e``) and call ``ft_printk("format", args...)``: a
    ``bpf_trace_printk`` whose format gets the source's marker and the task's
    command name put in front (so at most two arguments of your own, and,
    on kernels before 5.13, no ``%s`` of your own). Probes are resolved and
    reported like a :class:`~flowtrace.kernel_source.KernelSource`'s.

    On start the pipe is opened before the probes attach, so no line is
    missed; on stop the probes are detached first, then the lines already
    printed are read and emitted; the tracefs instance is removed on every
    exit path (and instances left by killed flowtrace processes are removed
    on the next start).

    ``event`` is :class:`TraceFields`, so its runs can be recorded
    (``--record``) and replayed.
    """

    event: ClassVar[type[TraceFields]] = TraceFields

    def __init__(
        self,
        *probes: Probe,
        prelude: str = "",
        name: str = "trace_pipe",
        cflags: Sequence[str] = (),
    ) -> None:
        self.probes = probes
        self.prelude = prelude
        self.name = name
        self.cflags = tuple(cflags)
        self.marker = f"ft{secrets.token_hex(4)}"
        """The marker this source's lines start with."""

    def event_type(self) -> type[TraceFields]:
        return TraceFields

    def generated_code(self) -> str:
        return self.program().text

    def plan(self) -> list[Choice]:
        """Resolve every probe on this kernel without attaching (may raise AttachError)."""
        return resolve(self.probes)

    def program(self, choices: Sequence[Choice] | None = None) -> Program:
        """The generated C program for ``choices`` (default: this kernel's plan)."""
        parts = [_HEADER]
        if self.prelude.strip():
            parts.append(self.prelude.strip() + "\n")
        entries: list[tuple[AttachPoint, str]] = []
        for index, choice in enumerate(self.plan() if choices is None else choices):
            probe = choice.probe
            params = "".join(f", {p.c_type} {p.name}" for p in probe.params)
            body = _mark(probe.body.strip(), self.marker)
            parts.append(
                f"static __always_inline int ft_probe_{index}(void *ctx{params}) {{\n"
                + "".join(f"    {line}\n" for line in body.splitlines())
                + "    return 0;\n}"
            )
            for n, point in enumerate(choice.chosen):
                fn = f"ft_entry_{index}_{n}"
                parts.append(point.entry(fn, f"ft_probe_{index}({{args}})", probe.params))
                entries.append((point, fn))
        return Program("\n\n".join(parts) + "\n", tuple(entries))

    def describe(self) -> list[str]:
        lines = [f"source {self.name}: ft_printk lines marked {self.marker!r}"]
        lines += [f"  {choice.describe()}" for choice in self.plan()]
        return lines

    async def run(self, ctx: SourceContext, emit: Emit[TraceFields]) -> None:
        choices = self.plan()
        program = self.program(choices)
        pipe = _Pipe(self.marker)
        loaded = LoadedProgram()
        try:
            pipe.open()
            ctx.report(f"reading {pipe.describe()}")
            await anyio.to_thread.run_sync(loaded.load, program, self.cflags)
            for choice in choices:
                ctx.report(f"attached {choice.describe()}")
            ctx.ready()
            await self._pump(ctx, emit, pipe, loaded)
        finally:
            loaded.release()
            pipe.close()

    @staticmethod
    async def _pump(
        ctx: SourceContext, emit: Emit[TraceFields], pipe: _Pipe, loaded: LoadedProgram
    ) -> None:
        stats = ctx.stats

        def lost() -> int:
            return pipe.lost + int(loaded.bpf[_FAILED_MAP.encode()].sum(0).value)

        while not ctx.stop_requested:
            batch = pipe.read()
            if batch:
                stats.received += len(batch)
                await emit(batch)
            if pipe.more:
                await anyio.lowlevel.checkpoint()  # let other tasks run, then read on
            elif not batch:
                stats.lost = lost()
                await ctx.wait_readable(pipe.fd, _WAKE_INTERVAL)
        loaded.detach()
        for _ in range(_MAX_DRAIN_READS):
            batch = pipe.read()
            if batch:
                stats.received += len(batch)
                await emit(batch)
            elif not pipe.more:
                break
            await anyio.lowlevel.checkpoint()
        stats.lost = lost()
