"""The tutorial's lessons for real: each pipeline's source (and operators)
against a workload whose events are known, filtered to that workload."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from kernelrun import collect, through
from workloads import (
    Gated,
    dd,
    file_reader,
    forker,
    gc_collector,
    http_requests,
    loop_device,
    ping_pong,
    strlen_caller,
    syncs_apart,
)

from flowtrace import Operator, Pipeline, Source, usdt
from flowtrace.ktypes import s32
from flowtrace.loader import load_pipeline
from flowtrace.records import CountTable, Histogram, JoinPair
from flowtrace.sources.block import BlockComplete, BlockIssue
from flowtrace.sources.libc import strlen_calls
from flowtrace.sources.syscalls import QUICK_NS

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]


async def run(
    source: Source[Any],
    operators: Sequence[Operator[Any, Any]],
    workload: Callable[[], Any],
) -> list[Any]:
    """Attach ``source``, run ``workload`` in a thread, stop; what reached the end."""
    return await collect(source, workload, operators)


def lesson(path: str, args: list[str] | None = None) -> Pipeline:
    return load_pipeline(f"pipelines/{path}", args)


def line(pipeline: Pipeline, event: Any) -> str:
    """The line the lesson's console sink prints for ``event``."""
    format_line = pipeline.sink.line  # type: ignore[attr-defined]
    return str(format_line(event))


# -- lessons 1 and 3: hello world, by trace_pipe and by typed fields ----------


async def test_hello_world_prints_one_trace_pipe_line_per_fork() -> None:
    pipeline = lesson("hello_world.py")
    workload = forker(4)
    events = await collect(pipeline.source, workload.go)
    ours = [e for e in events if e.pid == workload.pid]
    assert [(e.task, e.msg) for e in ours] == [("python3", "Hello, World!")] * 4
    assert [e.ts for e in ours] == sorted(e.ts for e in ours)
    assert re.fullmatch(
        rf" +python3-{workload.pid} +\[\d{{3}}\] \S+ \d+\.\d{{6}}: Hello, World!",
        line(pipeline, ours[0]),
    )


async def test_hello_fields_prints_one_row_per_fork() -> None:
    pipeline = lesson("hello_fields.py")
    workload = forker(4)
    events = await collect(pipeline.source, workload.go)
    ours = [e for e in events if e.pid == workload.pid]
    assert [(e.comm, e.parent_pid) for e in ours] == [("python3", workload.pid)] * 4
    assert len({e.child_pid for e in ours}) == 4
    assert [e.ts for e in ours] == sorted(e.ts for e in ours)
    for e in ours:
        assert re.fullmatch(
            rf"\d+\.\d{{9}} +python3 +{workload.pid} +Hello, World!", line(pipeline, e)
        )


# -- lessons 4, 5, 8: quick syncs, state in the kernel ------------------------


@pytest.mark.parametrize("path", ["sync_timing.py", "sync_count.py", "sync_perf_output.py"])
async def test_sync_lessons_report_the_second_and_third_of_three_quick_syncs(path: str) -> None:
    pipeline = lesson(path)
    pids: list[int] = []

    def workload() -> None:
        pids.extend(syncs_apart(3, 0.1))

    events = await collect(pipeline.source, workload, operators=pipeline.operators)
    ours = [e for e in events if e.pid in pids]
    assert [e.pid for e in ours] == pids[1:]  # the first sync follows no recent one
    lines = [line(pipeline, e) for e in ours]
    pattern = r"At time (\d+\.\d\d) s: multiple syncs detected, last (\d+) ms ago"
    if path == "sync_count.py":
        pattern += r" \(sync count (\d+)\)"
    found = [m for text in lines if (m := re.fullmatch(pattern, text)) is not None]
    assert len(found) == 2, lines
    assert found[0][1] == "0.00"
    gaps = [int(m[2]) for m in found]
    # at least 0.1 s apart by construction; reported only under QUICK_NS (the lesson's rule)
    assert all(100 <= gap < QUICK_NS // 1_000_000 for gap in gaps), gaps
    if path == "sync_count.py":
        assert [int(m[3]) for m in found] == [2, 3]


# -- lessons 6, 9, 10, 13: direct writes on a loop device ---------------------

WRITES = 4
WRITE_BYTES = 128 << 10


def direct_writes(
    device: str, span: list[int] | None = None, pids: list[int] | None = None
) -> Callable[[], None]:
    """dd writing WRITES blocks of WRITE_BYTES to ``device``, one after the
    other (O_DIRECT: each returns once its request completed). ``span``
    receives the CLOCK_MONOTONIC times (ns, the BPF clock) before and after,
    ``pids`` dd's pid."""

    def write() -> None:
        before = time.monotonic_ns()
        pid = dd(
            "if=/dev/zero", f"of={device}", f"bs={WRITE_BYTES}", f"count={WRITES}", "oflag=direct"
        )
        if span is not None:
            span[:] = [before, time.monotonic_ns()]
        if pids is not None:
            pids[:] = [pid]

    return write


async def loop_writes(
    source: Source[Any], span: list[int] | None = None, pids: list[int] | None = None
) -> list[Any]:
    """The requests ``source`` sees on a fresh loop device while dd writes to
    it (``span``, ``pids``: see :func:`direct_writes`)."""
    with loop_device() as (device, dev):
        events = await collect(source, direct_writes(device, span, pids))
    return [e for e in events if e.dev == dev]


def latency_bounds(latencies: list[int], span: list[int]) -> None:
    """The workload's own timing bounds its requests: each took some time,
    and the sequential requests together took no longer than dd ran."""
    before, after = span
    assert all(lat > 0 for lat in latencies), latencies
    assert sum(latencies) <= after - before, (latencies, after - before)


async def aggregate(pipeline: Pipeline, events: list[Any]) -> list[Any]:
    """What the lesson's operators make of ``events`` (no kernel involved)."""
    return await through(events, pipeline.operators)


async def test_disksnoop_sees_each_direct_write() -> None:
    pipeline = lesson("disksnoop.py")
    span: list[int] = []
    pids: list[int] = []
    ours = await loop_writes(pipeline.source, span, pids)
    # one after the other from the device's start (512-byte sectors); dd
    # issues its O_DIRECT writes itself (blk-mq dispatches them in its context)
    assert [(e.sector, e.bytes, e.write, e.pid, e.comm) for e in ours] == [
        (i * WRITE_BYTES // 512, WRITE_BYTES, 1, pids[0], "dd") for i in range(WRITES)
    ]
    latency_bounds([e.lat_ns for e in ours], span)
    assert all(span[0] <= e.ts - e.lat_ns and e.ts <= span[1] for e in ours)
    for e in ours:
        found = re.fullmatch(r"(\d+)\.(\d{6}) +W +131072 +(\d+\.\d\d)", line(pipeline, e))
        assert found, line(pipeline, e)
        assert abs((int(found[1]) * 10**6 + int(found[2])) * 1000 - e.ts) <= 1000  # microseconds
        assert abs(float(found[3]) - e.lat_ns / 1e6) <= 0.005  # milliseconds, rounded


async def test_disksnoop_sees_each_dsync_write_and_flushes_that_write_nothing() -> None:
    """O_DSYNC on a device with a write cache (a loop device): each write is
    followed by a flush, a request of its own (rwbs "FF", no data), which the
    lesson reports as not a write."""
    pipeline = lesson("disksnoop.py")
    pids: list[int] = []
    with loop_device() as (device, dev):
        events = await collect(
            pipeline.source,
            lambda: pids.append(
                dd(
                    "if=/dev/zero",
                    f"of={device}",
                    f"bs={WRITE_BYTES}",
                    f"count={WRITES}",
                    "oflag=direct,dsync",
                )
            ),
        )
    ours = [e for e in events if e.dev == dev]
    writes = [(e.sector, e.bytes, e.write, e.pid) for e in ours if e.bytes]
    assert writes == [(i * WRITE_BYTES // 512, WRITE_BYTES, 1, pids[0]) for i in range(WRITES)]
    flushes = [(e.sector, e.bytes, e.write) for e in ours if not e.bytes]
    assert len(flushes) >= WRITES and set(flushes) == {(0, 0, 0)}, ours


def issue_then_complete(events: list[Any]) -> list[tuple[BlockIssue, BlockComplete]]:
    """The requests in ``events`` (both block tracepoints, in buffer order):
    each issue, then its completion at the same sector."""
    issues = [e for e in events if isinstance(e, BlockIssue)]
    assert [type(e) for e in events] == [BlockIssue, BlockComplete] * len(issues)
    pairs = list(zip(events[::2], events[1::2], strict=True))
    assert all(i.sector == c.sector and c.ts > i.ts for i, c in pairs)
    return pairs


async def test_disksnoop_tp_pairs_each_direct_write_issue_with_its_completion() -> None:
    pipeline = lesson("disksnoop_tp.py")
    span: list[int] = []
    ours = await loop_writes(pipeline.source, span)
    requests = issue_then_complete(ours)
    assert span[0] <= requests[0][0].ts and requests[-1][1].ts <= span[1]
    latency_bounds([c.ts - i.ts for i, c in requests], span)
    assert [(i.bytes, i.rwbs[0]) for i, _ in requests] == [(WRITE_BYTES, "W")] * WRITES
    pairs = await aggregate(pipeline, ours)
    assert all(isinstance(p, JoinPair) for p in pairs)
    assert [(p.start, p.complete, p.latency_ns) for p in pairs] == [
        (i, c, c.ts - i.ts) for i, c in requests
    ]
    for p in pairs:
        assert re.fullmatch(r"\d+\.\d{6} +W +131072 +\d+\.\d\d", line(pipeline, p))


async def test_bitehist_puts_128k_writes_in_the_128_255_kbyte_bucket() -> None:
    pipeline = lesson("bitehist.py")
    (hist,) = await aggregate(pipeline, await loop_writes(pipeline.source))
    assert isinstance(hist, Histogram)
    assert hist.unit == "kbytes"
    assert [(b.low, b.high, b.count) for b in hist.buckets if b.count] == [(128, 255, WRITES)]


async def test_disklatency_histogram_holds_each_write_latency() -> None:
    pipeline = lesson("disklatency.py")
    span: list[int] = []
    ours = await loop_writes(pipeline.source, span)
    requests = issue_then_complete(ours)
    assert len(requests) == WRITES
    latencies = [c.ts - i.ts for i, c in requests]
    latency_bounds(latencies, span)
    (hist,) = await aggregate(pipeline, ours)
    assert isinstance(hist, Histogram)
    assert hist.unit == "usecs"
    # bcc's log2 buckets: 0 -> 1, then 2**k -> 2**(k+1) - 1
    bits = [(lat // 1000).bit_length() for lat in latencies]
    expected = Counter((0, 1) if b < 2 else (1 << b - 1, (1 << b) - 1) for b in bits)
    assert {(b.low, b.high): b.count for b in hist.buckets if b.count} == expected


def test_disk_lessons_explain_the_operators_their_programs_run() -> None:
    """The source's first line in explain names both event types and the
    operators the program runs, then what leaves it; its probe lines stay."""
    own = lesson("disksnoop_tp.py").source.describe()
    name, buffer = own[0].removeprefix("source ").split(": BlockIssue, BlockComplete via ")
    joined = lesson("disksnoop_tp.py").placement().source.describe()
    assert joined == [
        f"source {name}: BlockIssue, BlockComplete through join in the kernel;"
        f" join pairs via {buffer}",
        *own[1:],
    ]
    histogram = lesson("disklatency.py").placement().source.describe()
    assert histogram == [
        f"source {name}: BlockIssue, BlockComplete into join, log2_histogram in the kernel;"
        " results read from BPF maps by user space",
        *own[1:],
    ]


# -- lesson 11: read latency ---------------------------------------------------


async def test_vfsreadlat_histograms_hold_each_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(4096))
    reads = 25
    workload = file_reader(str(data), 4096, reads)
    pipeline = lesson("vfsreadlat.py", ["1"])
    span: list[int] = []

    def go() -> None:
        before = time.monotonic_ns()
        workload.go()
        span[:] = [before, time.monotonic_ns()]

    events = await collect(pipeline.source, go)
    ours = [e for e in events if e.pid == workload.pid and e.ret == 4096]
    assert len(ours) == reads
    latency_bounds([e.lat_ns for e in ours], span)
    results = await aggregate(pipeline, ours)
    assert results and all(isinstance(h, Histogram) and h.unit == "usecs" for h in results)
    bits = [(e.lat_ns // 1000).bit_length() for e in ours]
    expected = Counter((0, 1) if b < 2 else (1 << b - 1, (1 << b) - 1) for b in bits)
    counted: Counter[tuple[int, int]] = Counter()
    for h in results:
        counted.update({(b.low, b.high): b.count for b in h.buckets if b.count})
    assert counted == expected


def test_vfsreadlat_header_says_what_is_timed() -> None:
    from flowtrace.sources.reads import READ_SYSCALL, read_latencies, read_latency_scheme

    header = lesson("vfsreadlat.py").sink.header  # type: ignore[attr-defined]
    timed = read_latency_scheme(read_latencies().plan())
    assert header[-1] == "Tracing... Hit Ctrl-C to end."
    assert (timed == READ_SYSCALL) == any("read(2)" in text for text in header)


# -- lesson 12: urandomread ----------------------------------------------------


async def test_urandomread_sees_five_reads_of_dd() -> None:
    pipeline = lesson("urandomread.py")
    pids: list[int] = []
    events = await collect(
        pipeline.source,
        lambda: pids.append(dd("if=/dev/urandom", "of=/dev/null", "bs=8k", "count=5")),
    )
    ours = [e for e in events if e.pid in pids]
    assert [(e.comm, e.got_bits) for e in ours] == [("dd", 65536)] * 5
    assert re.fullmatch(rf"\d+\.\d{{9}} +dd +{pids[0]} +65536", line(pipeline, ours[0]))


# Reads through every way a descriptor comes and goes: the n-th read takes n
# bytes, so the bits reported name the reads. "urandom" marks the reads of
# /dev/urandom; the others read /dev/zero, often on a number that was a
# /dev/urandom descriptor before.
DESCRIPTOR_LIFECYCLE = """
import ctypes, fcntl
libc = ctypes.CDLL(None, use_errno=True)
def call(result):
    assert result >= 0, os.strerror(ctypes.get_errno())
    return result
n = 0
def read(fd):
    global n
    n += 1
    assert len(os.read(fd, n)) == n
u = os.open("/dev/urandom", os.O_RDONLY)
read(u)                                      # 1 urandom
a = call(libc.dup(u))
read(a)                                      # 2 urandom: dup
os.close(u)
read(a)                                      # 3 urandom: its dup stays open
z = os.open("/dev/zero", os.O_RDONLY)
assert z == u
read(z)                                      # 4: a closed number reused
b = call(libc.dup2(a, 100))
read(b)                                      # 5 urandom: dup2
c = call(libc.dup3(a, 101, os.O_CLOEXEC))
read(c)                                      # 6 urandom: dup3
d = fcntl.fcntl(a, fcntl.F_DUPFD, 102)
read(d)                                      # 7 urandom: fcntl(F_DUPFD)
e = fcntl.fcntl(a, fcntl.F_DUPFD_CLOEXEC, 103)
read(e)                                      # 8 urandom: fcntl(F_DUPFD_CLOEXEC)
call(libc.dup2(z, 100))
read(100)                                    # 9: dup2 over a urandom number
call(libc.dup3(z, 101, 0))
read(101)                                    # 10: dup3 over a urandom number
call(libc.dup2(z, 0))
assert fcntl.fcntl(a, fcntl.F_GETFD) == 0    # not a dup: returns 0, the flags
read(0)                                      # 11: fd 0 is /dev/zero still
call(libc.dup2(a, 0))
f = call(libc.dup(0))
read(f)                                      # 12 urandom: a dup of descriptor 0
os.close(a)
assert os.open("/dev/zero", os.O_RDONLY) == a
read(a)                                      # 13: a closed dup's number reused
call(libc.dup2(z, 0))
g = call(libc.dup(d))
read(g)                                      # 14 urandom: a dup
assert fcntl.fcntl(g, fcntl.F_GETFD) == 0    # not a dup (after one), returning 0
read(0)                                      # 15: fd 0 is /dev/zero
assert os.read(d, 0) == b""                  # a read of no bytes: no bits, not reported
os.close(0)
assert os.open("/dev/urandom", os.O_RDONLY) == 0
read(0)                                      # 16 urandom: opened as descriptor 0
import tempfile
t = os.open(tempfile.mkdtemp(), os.O_RDONLY)
os.mkdir("Xdev", dir_fd=t)
os.write(os.open("Xdev/urandom", os.O_WRONLY | os.O_CREAT, dir_fd=t), bytes(64))
x = os.open("Xdev/urandom", os.O_RDONLY, dir_fd=t)
read(x)                                      # 17: a file whose path differs in its first byte
"""


async def test_urandomread_follows_descriptors_through_dup_dup2_dup3_fcntl_and_close() -> None:
    workload = Gated(DESCRIPTOR_LIFECYCLE)
    events = await collect(lesson("urandomread.py").source, workload.go)
    ours = [e.got_bits // 8 for e in events if e.pid == workload.pid]
    assert ours == [1, 2, 3, 5, 6, 7, 8, 12, 14, 16]


# Two processes whose pids differ in the lowest bit only (2k and 2k+1) hold the
# same descriptor number: the first on /dev/urandom, the second on /dev/zero.
# Forks until two children get such pids, writes them to PIDS, then lets the
# first read 1 byte and exit, and the second read 2 bytes.
NEIGHBOURS = """
def child(gate):
    if os.read(gate, 1) == b"u":
        fd = os.open("/dev/urandom", os.O_RDONLY)
        assert len(os.read(fd, 1)) == 1
    else:
        fd = os.open("/dev/zero", os.O_RDONLY)
        assert len(os.read(fd, 2)) == 2
    os._exit(0)
for _ in range(1000):
    gates = [os.pipe(), os.pipe()]
    first = os.fork()
    if first == 0:
        child(gates[0][0])
    second = os.fork()
    if second == 0:
        child(gates[1][0])
    if first % 2 == 0 and second == first + 1:
        break
    for (_, go), pid in zip(gates, [first, second]):
        os.write(go, b"-")
        os.waitpid(pid, 0)
    for r, w in gates:
        os.close(r), os.close(w)
    if first % 2:  # each try takes two pids: one more flips the parity
        spare = os.fork()
        if spare == 0:
            os._exit(0)
        os.waitpid(spare, 0)
else:
    raise SystemExit("no two neighbouring pids in 1000 tries")
with open({pids!r}, "w") as out:
    out.write(f"{{first}} {{second}}")
os.write(gates[0][1], b"u")
os.waitpid(first, 0)
os.write(gates[1][1], b"z")
os.waitpid(second, 0)
"""


async def test_urandomread_tells_a_descriptor_from_the_same_number_in_a_neighbour_pid(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    workload = Gated(NEIGHBOURS.format(pids=str(pids)))
    events = await collect(lesson("urandomread.py").source, workload.go)
    first, second = map(int, pids.read_text().split())
    assert first >> 1 == second >> 1 and first != second
    ours = [(e.pid, e.got_bits) for e in events if e.pid in (first, second)]
    assert ours == [(first, 8)]


# -- lesson 14: strlen through its IFUNC ---------------------------------------


async def test_strlen_count_counts_each_call_exactly() -> None:
    tag = uuid.uuid4().hex[:8]
    calls = {f"flowtrace-{tag}-alpha": 3, f"flowtrace-{tag}-beta": 7, f"flowtrace-{tag}": 1}
    workload = strlen_caller(calls)
    pipeline = lesson("strlen_count.py")
    (table,) = await run(pipeline.source, pipeline.operators, workload.go)
    assert isinstance(table, CountTable)
    counted = {r.key["string"]: r.count for r in table.rows if tag in r.key["string"]}
    assert counted == calls


async def test_a_uprobe_on_the_ifunc_symbol_itself_misses_every_call() -> None:
    """Why lesson 14 follows the IFUNC: the symbol only runs the resolver."""
    tag = uuid.uuid4().hex[:8]
    workload = strlen_caller({f"flowtrace-{tag}": 5})
    events = await collect(strlen_calls(follow_ifunc=False), workload.go)
    assert [e for e in events if tag in e.string] == []


# -- lesson 15: USDT -----------------------------------------------------------


async def test_nodejs_http_server_prints_exactly_the_requested_paths() -> None:
    paths = ["/index.html", "/images/welcome.png", "/images/favicon.png", "/a?b=c"]
    workload = http_requests(paths)
    pipeline = lesson("nodejs_http_server.py", [str(workload.pid)])
    events = await collect(pipeline.source, workload.go)
    assert [(e.pid, e.comm, e.path) for e in events] == [
        (workload.pid, "http_requests", p) for p in paths
    ]
    expected = rf"\d+\.\d{{9}} +http_requests +{workload.pid} +path:/index\.html"
    assert re.fullmatch(expected, line(pipeline, events[0]))


async def test_usdt_on_a_distribution_binary_python_gc_start() -> None:
    generations = [0, 1, 2, 2, 0]
    workload = gc_collector(generations)
    source = usdt(workload.pid, "python:gc__start", args={"generation": s32})
    events = await collect(source, workload.go)
    assert [(e.pid, e.generation) for e in events] == [(workload.pid, g) for g in generations]


# -- lesson 16: task_switch ----------------------------------------------------


async def test_task_switch_counts_switches_between_two_ping_ponging_threads() -> None:
    rounds = 2000
    workload = ping_pong(rounds)
    main, other = (int(t) for t in workload.lines)
    pipeline = lesson("task_switch.py")
    (table,) = await run(pipeline.source, pipeline.operators, workload.go)
    assert isinstance(table, CountTable)
    counts = {(r.key["prev_pid"], r.key["next_pid"]): r.count for r in table.rows}
    there, back = counts.get((main, other), 0), counts.get((other, main), 0)
    # SCHED_FIFO on one CPU (tests/programs/ping_pong.c): each round hands
    # the CPU over exactly once each way, nothing runs in between
    assert (there, back) == (rounds, rounds)
    row = next(r for r in table.rows if r.key == {"prev_pid": main, "next_pid": other})
    assert pipeline.sink.table.line(row) == f"task_switch[{main:5d}->{other:5d}]={there}"  # type: ignore[attr-defined]
