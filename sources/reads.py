"""Read latency: how long each vfs_read (or, failing that, read(2)) took.

Timed in the kernel as the tutorial's vfsreadlat does: the entry stores a
start time keyed by thread, the return looks it up and sends the latency.
Two schemes, best first:

* ``vfs_read()``: kprobe/kretprobe or fentry/fexit on the kernel's vfs_read,
  the tutorial's function, which also sees reads made inside the kernel
  (readv, sendfile, exec...);
* ``read(2)``: the read syscall's entry and exit tracepoints, where
  vfs_read cannot be probed (no kprobes or fentry). These time whole read(2)
  calls, including the syscall's own small overhead, and miss other paths
  into vfs_read.

Every read sends an event: 1,000,000 one-byte reads by dd took 0.32 s
untraced and about 1.1 s traced on the build machine (some 0.8 us per read,
every event delivered).
"""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import ktime_ns, s64, task_comm, task_pid, task_tid, u64
from flowtrace.plan import Choice
from flowtrace.probes import Fentry, Fexit, Kprobe, Kretprobe, Param, Probe, Scheme, Tracepoint

__all__ = ["READ_SYSCALL", "VFS_READ", "ReadLatency", "read_latencies", "read_latency_scheme"]

VFS_READ = "vfs_read()"
READ_SYSCALL = "read(2)"

# thread id -> entry time (ns); LRU, so threads blocked in read() for good
# cannot fill the table and stop every later read from being timed
_PRELUDE = 'BPF_TABLE("lru_hash", u32, u64, ft_read_start, 10240);'

_ENTRY = """\
u32 tid = bpf_get_current_pid_tgid();
u64 now = bpf_ktime_get_ns();
ft_read_start.update(&tid, &now);
"""

_RETURN = """\
u32 tid = bpf_get_current_pid_tgid();
u64 *start = ft_read_start.lookup(&tid);
if (!start)
    return 0;
e.lat_ns = e.ts - *start;
e.ret = ret;
ft_read_start.delete(&tid);
"""

_VFS_READ_SIGNATURE = ("struct file *file", "char *buf", "size_t count", "loff_t *pos")


class ReadLatency(Event, frozen=True):
    """A read that returned ``ret`` (bytes, or a negative errno) after ``lat_ns``."""

    ts: ktime_ns
    lat_ns: u64
    ret: s64
    pid: task_pid
    tid: task_tid
    comm: task_comm


def _probes() -> tuple[Probe, Probe]:
    entry = Probe(
        "entry of vfs_read",
        Scheme(VFS_READ, Kprobe(function="vfs_read")),
        Scheme(VFS_READ, Fentry(function="vfs_read", signature=_VFS_READ_SIGNATURE)),
        Scheme(READ_SYSCALL, Tracepoint("syscalls", "sys_enter_read")),
        body=_ENTRY,
        emits=False,
    )
    ret = Probe(
        "return of vfs_read",
        Scheme(VFS_READ, Kretprobe(function="vfs_read")),
        Scheme(
            VFS_READ, Fexit(function="vfs_read", signature=(*_VFS_READ_SIGNATURE, "ssize_t ret"))
        ),
        Scheme(READ_SYSCALL, Tracepoint("syscalls", "sys_exit_read")),
        body=_RETURN,
        params=[Param("ret", "s64")],
    )
    return entry, ret


def read_latencies(*, transport: str = "auto") -> KernelSource[ReadLatency]:
    """The latency of every vfs_read (or read(2), see the module docstring)."""
    return KernelSource(
        ReadLatency, *_probes(), prelude=_PRELUDE, name="reads", transport=transport
    )


def read_latency_scheme(choices: list[Choice]) -> str:
    """What a plan of :func:`read_latencies` times: ``vfs_read()`` or ``read(2)``."""
    return choices[0].scheme
