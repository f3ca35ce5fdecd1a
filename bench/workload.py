"""What every contender traces and what it must answer.

All contenders attach to the ``syscalls:sys_enter_getppid`` tracepoint,
keep only the load generator's pid (in the kernel, by substituting the pid
into the program, as bcc's tools do), and work on the same 32-byte record::

    struct { u64 ts; u32 pid; char comm[16]; u32 tslow; }

``tslow`` is ``ts`` modulo 65536 (nanoseconds): a field whose log2
histogram spreads over buckets 0 to 16, for the histogram contenders
(bpftrace's ``hist(nsecs & 0xffff)``). The expected answer of the count
contenders is ``{LOADGEN_COMM: delivered}``; of the histogram contenders,
buckets whose counts add up to what was delivered.
"""

from __future__ import annotations

from flowtrace import Event, KernelSource, Probe, syscall_entry_points
from flowtrace.ktypes import ktime_ns, task_comm, task_pid, u32

__all__ = [
    "BCC_RECORD",
    "LOADGEN_COMM",
    "TRACEPOINT",
    "Getppid",
    "bcc_filter",
    "getppid_source",
]

LOADGEN_COMM = "ft-loadgen"
"""The load generator's command name (its executable's name)."""

TRACEPOINT = ("syscalls", "sys_enter_getppid")

TSLOW_MASK = 0xFFFF


class Getppid(Event, frozen=True):
    """One getppid(2) call of the load generator."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm
    tslow: u32


def getppid_source(
    pid: int, *, transport: str = "auto", buffer_pages: int | None = None
) -> KernelSource[Getppid]:
    """flowtrace's source for the workload: getppid entries of ``pid`` only.

    ``buffer_pages=None`` keeps flowtrace's default buffer size.
    """
    probe = Probe(
        "entry of getppid(2)",
        *syscall_entry_points("getppid"),
        body=f"if (e.pid != {pid}) return 0;\ne.tslow = e.ts & {TSLOW_MASK:#x};",
    )
    if buffer_pages is None:
        return KernelSource(Getppid, probe, name="getppid", transport=transport)
    return KernelSource(
        Getppid, probe, name="getppid", transport=transport, buffer_pages=buffer_pages
    )


BCC_RECORD = """\
struct data_t {
    u64 ts;
    u32 pid;
    char comm[TASK_COMM_LEN];
    u32 tslow;
};
"""
"""The record as the tutorial's programs declare it (the same 32 bytes)."""


def bcc_filter(pid: int) -> str:
    """C filling ``data`` for the tutorial-style programs, or returning early
    for other processes (the same work flowtrace's generated program does)."""
    return f"""\
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != {pid})
        return 0;
    data.ts = bpf_ktime_get_ns();
    data.pid = pid;
    bpf_get_current_comm(&data.comm, sizeof(data.comm));
    data.tslow = data.ts & {TSLOW_MASK:#x};
"""
