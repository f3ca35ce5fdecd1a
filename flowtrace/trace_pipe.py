"""The trace_pipe output: ``bpf_trace_printk()`` lines as pipeline events.

The tutorial's first lessons print from BPF with ``bpf_trace_printk()`` and
read the lines back from the shared ``trace_pipe`` (bcc's ``trace_print`` and
``trace_fields``). :class:`TracePipe` is that path as an output of a
:class:`~flowtrace.kernel_source.KernelSource` (:class:`TracePipeSource`
builds one): probe bodies call ``ft_printk("format", args...)``, and each
line comes out as a :class:`TraceFields` event with the fields
``trace_fields()`` returns: task, pid, cpu, flags, ts and msg.

trace_pipe is shared by every program on the machine, and reading it
consumes what is read. So each run puts a marker of its own at the start
of every message, and, where the kernel routes ``bpf_trace_printk`` through
its ``bpf_trace:bpf_trace_printk`` event (Linux 5.10+), reads a private
tracefs instance that records only that event, filtered by the marker: it
sees only its own lines and takes no line from anyone reading the shared
pipe. Elsewhere it reads the shared ``trace_pipe`` and keeps only lines with
its marker; the lines of other programs it reads then are lost to them, as
with bcc's ``trace_print``.

Lines the kernel could not record (``CPU:N [LOST M EVENTS]``), lines
``bpf_trace_printk`` refused (a format the kernel rejects) and lines
carrying the run's marker that do not parse as a trace line are counted
as ``stats.lost``: every line the probes printed is emitted or counted.
Each read takes at most :data:`MAX_READS` chunks from the pipe, so a fast
printer cannot keep the event loop busy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from . import kernel
from .errors import KernelError
from .events import Layout
from .kernel_source import KernelSource
from .loaded import LoadedProgram
from .outputs import Channel, Output
from .probes import Probe

__all__ = ["MAX_READS", "TraceFields", "TracePipe", "TracePipeSource", "parse_trace_line"]

_READ_SIZE = 1 << 16
MAX_READS = 16
"""Chunks (of 64 KiB) one read of the pipe takes at most; the rest waits
for the next read, after the event loop ran other tasks."""
_MAX_COUNT_READS = 64  # reads counting what is left at stop (the shared pipe may never run dry)
_COUNT_LIMIT = 1 << 20  # lines: when counting what is left, only MAX_READS bounds a read
_DEFAULT_BUFFER_KB = 1408  # a CPU's trace buffer, where tracefs does not say
_LINE_BYTES = 128  # a marked line in the trace buffer, at most about (for its capacity)
_WAKE_INTERVAL = 0.25  # seconds between checks when poll does not wake us
_INSTANCE_PREFIX = "flowtrace-"
LOCKS = Path("/run/flowtrace")
"""Where each private instance's lock file is: held (flock) for the run's
life, so an instance whose lock can be taken is provably stale, in any PID
namespace (a pid in the instance's name proves nothing across namespaces)."""

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
            " ft_count_lost(); })"
        )
        position = call_end + 1
    out.append(body[position:])
    return "".join(out)


class _Pipe(Channel):
    """One run's trace_pipe channel, and its reader: the run's probes print
    with its marker in front, and it reads a private tracefs instance
    recording only lines with that marker, or else the shared pipe, keeping
    the marked lines."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.root: Path | None = None
        self.instance: Path | None = None
        self._lock = -1
        self.fd = -1
        self.more = False
        """Whether the last :meth:`read` stopped at its bound, with more possibly left."""
        self.private_failed = ""
        self._lost = 0
        self._capacity = _DEFAULT_BUFFER_KB * 1024 // _LINE_BYTES
        self._tail = b""

    def declarations(self) -> str:
        return ""  # ft_printk is bpf_trace_printk; what it refuses goes to ft_count_lost()

    def probe_body(self, body: str) -> str:
        return _mark(body, self.marker)

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
        self.root = kernel.tracefs()
        if self.root is None:
            raise KernelError("tracefs is not mounted: mount -t debugfs debugfs /sys/kernel/debug")
        if self.private_possible():
            try:
                self._open_private(self.root / "instances")
            except OSError as exc:
                self.close()
                self.private_failed = f"no private instance ({exc.strerror or exc})"
        if self.fd < 0:
            self.fd = os.open(self.root / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        self._capacity = _buffer_kb(self.instance or self.root) * 1024 // _LINE_BYTES

    def _open_private(self, instances: Path) -> None:
        name = f"{_INSTANCE_PREFIX}{os.getpid()}-{self.marker}"
        self._lock_path = LOCKS / f"{name}.lock"
        self._lock = _hold_lock(self._lock_path)  # before the instance exists
        _remove_stale_instances(instances)
        self.instance = instances / name
        self.instance.mkdir()
        event = self.instance / "events" / "bpf_trace" / "bpf_trace_printk"
        (event / "filter").write_text(f'bpf_string ~ "{self.marker} *"\n')
        percent = self.instance / "buffer_percent"
        if percent.exists():
            percent.write_text("0\n")  # wake a poll on every line, not at half full
        (event / "enable").write_text("1\n")
        self.fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def connect(self, loaded: LoadedProgram) -> _Pipe:
        """The pipe, opened before the probes attached, is its own reader."""
        return self

    @property
    def max_wait(self) -> float:
        # poll wakes per line on a private instance, at half full on the shared pipe
        return 0.0 if self.more else _WAKE_INTERVAL

    @property
    def capacity(self) -> int:
        """Lines one CPU's trace buffer holds, about."""
        return self._capacity

    def read(self, limit: int) -> list[TraceFields]:
        """The complete lines carrying the marker in what is available now.
        Reads whole 64 KiB chunks until they hold ``limit`` lines (anyone's),
        and at most :data:`MAX_READS` of them; :attr:`more` tells whether it
        stopped at either bound, with more possibly left."""
        chunks: list[bytes] = []
        lines = 0
        self.more = False
        while len(chunks) < MAX_READS and lines < limit:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            lines += chunk.count(b"\n")
        else:
            self.more = True
        if not chunks:
            return []
        data = self._tail + b"".join(chunks)
        *complete, self._tail = data.split(b"\n")
        return list(self._ours(complete))

    def _ours(self, lines: list[bytes]) -> Iterator[TraceFields]:
        prefix = self.marker + " "
        marker = prefix.encode()
        for raw in lines:
            parsed = parse_trace_line(raw.decode("utf-8", "replace"))
            if isinstance(parsed, int):
                self._lost += parsed
            elif parsed is None:
                if marker in raw:  # one of ours, in no format we know: counted
                    self._lost += 1
            elif parsed.msg.startswith(prefix):
                task, _, msg = parsed.msg[len(prefix) :].partition(_SEPARATOR)
                yield msgspec.structs.replace(parsed, task=task, msg=msg)

    def pending(self) -> bool:
        return self.more

    def unread(self) -> int:
        """Lines of ours still in the pipe: read now and counted, not emitted
        (at most 64 reads of :data:`MAX_READS` chunks, far more than the
        kernel's buffers hold: a shared pipe that other programs keep filling
        may never run dry)."""
        count = 0
        for _ in range(_MAX_COUNT_READS):
            count += len(self.read(_COUNT_LIMIT))
            if not self.more:
                break
        return count

    def lost(self) -> int:
        """``[LOST N EVENTS]`` lines, and lines with the marker that do not parse."""
        return self._lost

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.instance is not None:
            _remove_instance(self.instance)
            self.instance = None
        if self._lock >= 0:
            _release_lock(self._lock, self._lock_path)
            self._lock = -1


def _buffer_kb(directory: Path) -> int:
    """A CPU's trace buffer size in ``directory`` (tracefs or an instance), in KiB;
    the size it will have once expanded (``7 (expanded: 1408)``)."""
    try:
        return int(re.findall(r"\d+", (directory / "buffer_size_kb").read_text())[-1])
    except (OSError, IndexError):
        return _DEFAULT_BUFFER_KB


def _remove_instance(path: Path) -> None:
    with contextlib.suppress(OSError):
        (path / "events" / "bpf_trace" / "bpf_trace_printk" / "enable").write_text("0\n")
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def _hold_lock(path: Path) -> int:
    """A new lock file at ``path``, locked (flock) until :func:`_release_lock`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release_lock(fd: int, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


def _remove_stale_instances(instances: Path) -> None:
    """Remove instances left by flowtrace runs that ended without removing
    them (killed): those whose lock file exists and can be locked. A live
    run holds its lock, wherever (whatever PID namespace) it runs; an
    instance without a lock file cannot be proven stale and is left alone."""
    for path in instances.glob(f"{_INSTANCE_PREFIX}*-*"):
        lock = LOCKS / f"{path.name}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file: not provably stale
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # held: a live run
            continue
        try:
            _remove_instance(path)
        except OSError as exc:  # another process may be removing it too
            if exc.errno not in (errno.EBUSY, errno.ENOENT):
                raise
        finally:
            _release_lock(fd, lock)


class TracePipe(Output):
    """``bpf_trace_printk`` lines read back from trace_pipe, as :class:`TraceFields`.

    Probe bodies fill no record: they call ``ft_printk("format", args...)``.
    Each run gets a marker of its own (``ft`` and 8 random hex digits) and a
    tracefs instance of its own, so runs of one source at once see only
    their own lines.
    """

    def layout(self, event: type[Any]) -> None:
        if event is not TraceFields:
            raise ValueError(
                f"the trace_pipe output emits TraceFields, not {event.__name__}:"
                " KernelSource(TraceFields, ..., output=TracePipe())"
            )
        return None

    def describe(self, event: type[Any]) -> str:
        return "ft_printk lines marked 'ft' and 8 random hex digits (new each run), from trace_pipe"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return _Pipe(f"ft{secrets.token_hex(4)}")


class TracePipeSource(KernelSource[TraceFields]):
    """Lines its probes print with ``ft_printk(...)``, as :class:`TraceFields`:
    a :class:`~flowtrace.kernel_source.KernelSource` with the
    :class:`TracePipe` output.

    Probe bodies run with the probe's parameters in scope (there is no event
    record ``e``) and call ``ft_printk("format", args...)``: a
    ``bpf_trace_printk`` whose format gets the run's marker and the task's
    command name put in front (so at most two arguments of your own, and,
    on kernels before 5.13, no ``%s`` of your own). Probes are resolved and
    reported like any kernel source's.

    On start the pipe is opened before the probes attach, so no line is
    missed; on stop the probes are detached first, then the lines already
    printed are read and emitted (for up to 0.1 s, like any kernel source's
    records; lines left after that are counted as ``unread_at_stop``); the
    tracefs instance is removed on every exit path (and instances left by
    killed flowtrace processes are removed on the next start).

    ``event`` is :class:`TraceFields`, so its runs can be recorded
    (``--record``) and replayed.
    """

    def __init__(
        self,
        *probes: Probe,
        prelude: str = "",
        name: str = "trace_pipe",
        cflags: Sequence[str] = (),
    ) -> None:
        super().__init__(
            TraceFields, *probes, prelude=prelude, name=name, cflags=cflags, output=TracePipe()
        )
