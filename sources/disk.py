"""Block device I/O: each request from issue to completion, timed in the kernel.

As in the tutorial's disksnoop, the issue probe stores a start record in a
BPF hash keyed by the request and the completion probe looks it up, so only
finished requests whose issue was seen reach userspace, with their latency.

Two schemes key the request the same way on both sides:

* ``request pointer`` (kprobes or fentry on the tutorial's functions): the
  ``struct request *``. The size and direction are read from the request at
  issue, so this scheme is only used where bcc has the running kernel's own
  headers (struct offsets).
* ``device and sector`` (``block:block_rq_issue``/``block:block_rq_complete``):
  the device number and start sector, which the request does not change
  between issue and completion. Nothing is dereferenced; size and direction
  come from the tracepoint's ``bytes`` and ``rwbs`` fields. A request that
  completes in several parts is timed to its first part.

The tutorial's functions have moved: ``blk_start_request`` was removed in
Linux 5.0 and ``blk_account_io_done`` is inlined in recent kernels, so the
tracepoints are the usual choice.
"""

from __future__ import annotations

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import comm, ktime_ns, u32, u64
from flowtrace.probes import Fentry, Kprobe, Param, Probe, Scheme, Tracepoint

__all__ = ["DiskRequest", "disk_requests"]

REQUEST = "request pointer"
DEVICE_SECTOR = "device and sector"

_PRELUDE = """\
#include <linux/blk-mq.h>

struct ft_rq_key {
    u64 dev;     // 0 when keyed by request pointer
    u64 sector;  // or the request pointer
};
struct ft_rq_start {
    u64 ts;
    u64 bytes;
    u32 write;
    u32 pid;
    char comm[16];
};
// LRU: a start whose completion never matches (issued at one sector,
// completed at another) must not keep its slot for ever and fill the table
BPF_TABLE("lru_hash", struct ft_rq_key, struct ft_rq_start, ft_rq_start, 10240);

// 1 for requests that write (rwbs "W...", or "FW..." for a write with a
// preflush), 0 for reads and others.
static __always_inline u32 ft_rwbs_write(const char *rwbs) {
    return rwbs[0] == 'W' || (rwbs[0] == 'F' && rwbs[1] == 'W');
}

static __always_inline u64 ft_req_bytes(void *req) {
    unsigned int len = 0;
    bpf_probe_read_kernel(&len, sizeof(len), (char *)req + offsetof(struct request, __data_len));
    return len;
}

// REQ_WRITE in the tutorial: bit 0 of the operation, set for data-out requests.
static __always_inline u32 ft_req_write(void *req) {
    unsigned int flags = 0;
    bpf_probe_read_kernel(&flags, sizeof(flags), (char *)req + offsetof(struct request, cmd_flags));
    return flags & 1;
}
"""

_ISSUE = """\
struct ft_rq_key key = {.dev = dev, .sector = sector};
struct ft_rq_start start = {.ts = bpf_ktime_get_ns(), .bytes = bytes, .write = write};
start.pid = bpf_get_current_pid_tgid() >> 32;
bpf_get_current_comm(&start.comm, sizeof(start.comm));
ft_rq_start.update(&key, &start);
"""

_COMPLETE = """\
struct ft_rq_key key = {.dev = dev, .sector = sector};
struct ft_rq_start *start = ft_rq_start.lookup(&key);
if (!start)
    return 0;
e.lat_ns = e.ts - start->ts;
e.bytes = start->bytes;
e.write = start->write;
e.pid = start->pid;
__builtin_memcpy(&e.comm, start->comm, sizeof(e.comm));
e.dev = dev;
e.sector = sector;
ft_rq_start.delete(&key);
"""


class DiskRequest(Event, frozen=True):
    """A block I/O request that completed ``lat_ns`` after it was issued.

    ``ts`` is the completion time; ``write`` is 1 for writes, 0 for reads and
    other requests; ``pid``/``comm`` name the task that issued it (often the
    process doing the I/O, sometimes a kernel worker). ``dev`` and ``sector``
    are the device number (``major << 20 | minor``) and start sector, or 0
    and the request's address under the request pointer scheme.
    """

    ts: ktime_ns
    lat_ns: u64
    sector: u64
    bytes: u64
    dev: u32
    write: u32
    pid: u32
    comm: comm


_KEY = (Param("dev"), Param("sector"))
_BY_POINTER = {"dev": "0", "sector": "(u64)PT_REGS_PARM1(ctx)"}
_ISSUE_BY_POINTER = {
    **_BY_POINTER,
    "bytes": "ft_req_bytes((void *)PT_REGS_PARM1(ctx))",
    "write": "ft_req_write((void *)PT_REGS_PARM1(ctx))",
}
_ISSUE_FENTRY = {
    "dev": "0",
    "sector": "(u64)rq",
    "bytes": "ft_req_bytes(rq)",
    "write": "ft_req_write(rq)",
}


def _issue_probe() -> Probe:
    def kprobe(function: str) -> Kprobe:
        return Kprobe(function=function, fields=_ISSUE_BY_POINTER, reads_kernel_structs=True)

    by_pointer = [
        Scheme(REQUEST, kprobe("blk_start_request"), kprobe("blk_mq_start_request")),
        Scheme(REQUEST, kprobe("blk_mq_start_request")),
        Scheme(
            REQUEST,
            Fentry(
                function="blk_mq_start_request",
                signature=("struct request *rq",),
                fields=_ISSUE_FENTRY,
                reads_kernel_structs=True,
            ),
        ),
    ]
    tracepoint = Scheme(
        DEVICE_SECTOR,
        Tracepoint("block", "block_rq_issue", fields={"write": "ft_rwbs_write(args->rwbs)"}),
    )
    return Probe(
        "block request issued",
        *by_pointer,
        tracepoint,
        body=_ISSUE,
        params=[*_KEY, Param("bytes"), Param("write", "u32")],
        emits=False,
    )


def _completion_probe() -> Probe:
    by_pointer = [
        Scheme(REQUEST, Kprobe(function=function, fields=_BY_POINTER))
        for function in ("blk_account_io_done", "__blk_account_io_done")
    ]
    by_pointer.append(
        Scheme(
            REQUEST,
            Fentry(
                function="blk_account_io_done",
                signature=("struct request *req", "u64 now"),
                fields={"dev": "0", "sector": "(u64)req"},
            ),
        )
    )
    return Probe(
        "block request completed",
        *by_pointer,
        Scheme(DEVICE_SECTOR, Tracepoint("block", "block_rq_complete")),
        body=_COMPLETE,
        params=_KEY,
    )


def disk_requests(*, transport: str = "auto") -> KernelSource[DiskRequest]:
    """Every block request from issue to completion, with its size, direction
    and latency."""
    return KernelSource(
        DiskRequest,
        _issue_probe(),
        _completion_probe(),
        prelude=_PRELUDE,
        name="disk",
        transport=transport,
    )
