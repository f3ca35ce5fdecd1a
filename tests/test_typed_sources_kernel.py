"""Typed sources against the real kernel: known workloads, exact events."""

from __future__ import annotations

import platform
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Annotated

import pytest
from kernelrun import collect
from workloads import Gated, GatedProgram, getppid_loop, http_requests, program

from flowtrace import (
    Arg,
    AttachError,
    Event,
    EventDefinitionError,
    raw_tracepoint,
    syscall_entry,
    syscall_exit,
    tracepoint,
    uprobe,
    usdt,
)
from flowtrace.ktypes import Char, ktime_ns, s32, s64, task_comm, task_pid, u64

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]

SIZES = [1, 10, 100, 1000, 4096]
FD = 42


def writer() -> Gated:
    """Writes each of SIZES bytes to /dev/null on descriptor FD, one write(2) each."""
    return Gated(
        f"os.dup2(os.open('/dev/null', os.O_WRONLY), {FD})\n"
        f"for n in {SIZES}:\n"
        f"    assert os.write({FD}, b'x' * n) == n\n"
    )


async def test_syscall_entry_write_sees_each_write_with_its_size() -> None:
    workload = writer()
    events = await collect(syscall_entry("write"), workload.go)
    ours = [e for e in events if e.pid == workload.pid]
    assert [(e.fd, e.count, e.syscall_nr, e.comm) for e in ours] == [
        (FD, n, 1, "python3") for n in SIZES
    ]
    assert all(e.tid == workload.pid and e.buf > 0 for e in ours)
    assert [e.ts for e in ours] == sorted(e.ts for e in ours)


async def test_syscall_exit_write_returns_each_size() -> None:
    workload = writer()
    events = await collect(syscall_exit("write"), workload.go)
    assert [e.ret for e in events if e.pid == workload.pid] == SIZES


class Write(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    fd: s32
    count: u64


async def test_a_declared_event_is_filled_from_the_tracepoint() -> None:
    workload = writer()
    events = await collect(syscall_entry("write", event=Write), workload.go)
    ours = [e for e in events if e.pid == workload.pid]
    assert all(type(e) is Write for e in ours)
    assert [(e.fd, e.count) for e in ours] == [(FD, n) for n in SIZES]


class Opened(Event, frozen=True):
    pid: task_pid
    dfd: s32
    filename: Annotated[str, Char(64)]


async def test_a_pointer_field_declared_as_a_string_reads_the_path(tmp_path: Path) -> None:
    path = tmp_path / f"flowtrace-{uuid.uuid4().hex[:8]}"
    path.write_text("x")
    workload = Gated(f"os.close(os.open({str(path)!r}, os.O_RDONLY))\n")
    events = await collect(tracepoint("syscalls:sys_enter_openat", event=Opened), workload.go)
    assert [(e.dfd, e.filename) for e in events if e.pid == workload.pid] == [
        (-100, str(path)[:63])  # AT_FDCWD
    ]


class Misspelt(Event, frozen=True):
    comm: task_comm
    size: u64


def test_a_declared_event_that_does_not_fit_fails_when_planned() -> None:
    source = syscall_entry("write", event=Misspelt)  # building reads nothing
    with pytest.raises(EventDefinitionError) as raised:
        source.plan()
    assert str(raised.value) == (
        "Misspelt.size: tracepoint syscalls:sys_enter_write has no field 'size' (fields:"
        " ts: ktime_ns, pid: task_pid, tid: task_tid, comm: task_comm, syscall_nr: s32,"
        " fd: u64, buf: u64, count: u64)"
    )


def test_a_missing_tracepoint_is_one_line() -> None:
    with pytest.raises(AttachError) as raised:
        tracepoint("syscalls:sys_enter_no_such_call").plan()
    assert str(raised.value).startswith(
        "tracepoint syscalls:sys_enter_no_such_call: no such tracepoint in this kernel"
    )


async def test_sched_process_exec_sees_the_exact_filename(tmp_path: Path) -> None:
    name = f"ft-exec-{uuid.uuid4().hex[:6]}"
    binary = tmp_path / name
    shutil.copy("/bin/true", binary)
    pids: list[int] = []

    def spawn() -> None:
        child = subprocess.Popen([str(binary)])
        pids.append(child.pid)
        assert child.wait(30) == 0

    events = await collect(tracepoint("sched:sched_process_exec"), spawn)
    ours = [e for e in events if e.filename == str(binary)]
    assert [(e.pid, e.old_pid, e.task_pid, e.comm) for e in ours] == [(pids[0],) * 3 + (name,)]
    # the naming rule: the tracepoint's own pid keeps its name, the task's is task_pid
    assert type(ours[0]).__struct_fields__[:4] == ("ts", "task_pid", "tid", "comm")


async def test_uprobe_with_a_string_argument() -> None:
    long_path = "/" + "p" * 100
    paths = ["/a/b", long_path, "third"]
    workload = GatedProgram([program("visits"), *paths])
    source = uprobe(
        program("visits"), "visit", args={"path": Char(64), "n": u64}, pid=workload.pid
    )
    events = await collect(source, workload.go)
    assert [(e.pid, e.comm, e.path, e.n) for e in events] == [
        (workload.pid, "visits", "/a/b", 1),
        (workload.pid, "visits", long_path[:63], 2),
        (workload.pid, "visits", "third", 3),
    ]


async def test_arguments_may_be_named_like_the_programs_own_names() -> None:
    """``ctx`` and ``e`` are names inside the generated C; arguments named so
    are still read (their C variables have names of their own)."""
    workload = GatedProgram([program("visits"), "/x"])
    source = uprobe(program("visits"), "visit", args={"e": Char(8), "ctx": u64}, pid=workload.pid)
    events = await collect(source, workload.go)
    assert [(e.e, e.ctx) for e in events] == [("/x", 1)]


async def test_usdt_reads_each_argument_with_its_size() -> None:
    paths = ["/index.html", "/a?b=c"]
    workload = http_requests(paths)
    args = {
        "address": Arg(3, Char(16)),
        "port": Arg(4, s32),
        "method": Arg(5, Char(8)),
        "path": Arg(6, Char(128)),
        "fd": Arg(7, s32),
    }
    source = usdt(workload.pid, "node:http__server__request", args=args)
    events = await collect(source, workload.go)
    assert [(e.pid, e.address, e.port, e.method, e.path, e.fd) for e in events] == [
        (workload.pid, "127.0.0.1", 8080, "GET", p, 3) for p in paths
    ]


def test_usdt_argument_declared_with_the_wrong_size_is_refused() -> None:
    workload = http_requests(["/"])
    try:
        source = usdt(workload.pid, "node:http__server__request", args={"port": Arg(4, u64)})
        with pytest.raises(AttachError, match="argument 4 of USDT node:http__server__request is"
                           r" 4 bytes \(s32\), declared u64: declare it s32"):
            source.plan()
    finally:
        workload.go()


async def test_raw_tracepoint_with_typed_arguments() -> None:
    calls = 250
    workload = getppid_loop(calls)
    getppid = {"x86_64": 110, "aarch64": 173}[platform.machine()]
    source = raw_tracepoint("sys_enter", args={"id": Arg(2, s64)})
    events = await collect(source, workload.go)
    assert len([e for e in events if e.pid == workload.pid and e.id == getppid]) == calls
