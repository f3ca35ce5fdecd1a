"""The kernel path for real: lessons 1, 2, 3 and 7 against known workloads,
drop accounting under a flood, and cleanup after failures."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from kernelrun import bpf_program, collect, lesson_source
from workloads import forker, getppid_loop, run_syncs

from flowtrace import (
    Event,
    KernelSource,
    Kprobe,
    Pipeline,
    Probe,
    RawTracepoint,
    Run,
    StageError,
    kernel,
    syscall_entry_points,
)
from flowtrace.ktypes import ktime_ns, task_comm, task_pid
from flowtrace.operators import F, filter
from flowtrace.plan import Choice
from flowtrace.testing import CollectSink

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.kernel


@pytest.mark.anyio
async def test_sys_sync_sees_exactly_each_sync() -> None:
    pids: list[int] = []
    events = await collect(
        lesson_source("pipelines/sys_sync.py"), lambda: pids.extend(run_syncs(3))
    )
    ours = [e for e in events if e.pid in pids]
    assert sorted(e.pid for e in ours) == sorted(pids)
    assert {e.comm for e in ours} == {"sync"}
    assert [e.ts for e in ours] == sorted(e.ts for e in ours)


@pytest.mark.anyio
async def test_two_pipelines_started_at_once_in_one_process_both_see_each_sync() -> None:
    """Their programs compile in worker threads; bcc's compiler crashed the
    process when two compiled at once, so loads take turns."""
    sinks = [CollectSink[Any]() for _ in range(2)]
    pipelines = [Pipeline(lesson_source("pipelines/sys_sync.py"), [], s) for s in sinks]
    runs: list[Run] = []
    async with anyio.create_task_group() as tg:

        async def start(pipeline: Pipeline) -> None:
            runs.append(await tg.start(pipeline.run))

        async with anyio.create_task_group() as starting:
            for pipeline in pipelines:
                starting.start_soon(start, pipeline)
        pids = await anyio.to_thread.run_sync(run_syncs, 2)
        for run in runs:
            run.stop()
    for sink in sinks:
        assert sorted(e.pid for e in sink.items if e.pid in pids) == sorted(pids)


@pytest.mark.anyio
async def test_a_run_reports_its_buffer_and_each_probe_attached() -> None:
    pipeline = Pipeline(lesson_source("pipelines/sys_sync.py"), [], CollectSink[Any]())
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        run.stop()
    assert run.stats.attached == [
        "syscalls:sys_enter_sync: reading the ring buffer, 1024 pages",
        "syscalls:sys_enter_sync: attached syscalls:sys_enter_sync"
        " via tracepoint syscalls:sys_enter_sync",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "lesson",
    ["pipelines/hello_world.py", "pipelines/hello_fields.py", "pipelines/hello_perf_output.py"],
)
async def test_process_lessons_see_exactly_each_fork(lesson: str) -> None:
    workload = forker(5)
    events = await collect(lesson_source(lesson), workload.go)
    ours = [e for e in events if e.pid == workload.pid]
    assert len(ours) == 5
    assert {e.comm for e in ours} == {"python3"}


class Getppid(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    comm: task_comm


def getppid_source(pid: int, pages: int, transport: str = "auto") -> KernelSource[Getppid]:
    probe = Probe(
        "entry of getppid(2)",
        *syscall_entry_points("getppid"),
        body=f"if (e.pid != {pid}) return 0;",
    )
    return KernelSource(Getppid, probe, name="getppid", buffer_pages=pages, transport=transport)


class Stalling(CollectSink[Getppid]):
    """Takes 20 ms per batch, far slower than the workload produces."""

    async def write(self, batch: list[Getppid]) -> None:
        await anyio.sleep(0.02)  # the sink's own slowness, not a wait for anything
        await super().write(batch)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["ringbuf", "perf"])
async def test_flooded_source_accounts_for_every_event(transport: str) -> None:
    count = 200_000
    workload = getppid_loop(count)
    sink = Stalling()
    pipeline = Pipeline(getppid_source(workload.pid, 1, transport), [], sink, capacity=1)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        await anyio.to_thread.run_sync(workload.go)
        with anyio.fail_after(10):  # the loss shows while the run goes on
            while run.stats.stages[0].lost <= 0:  # noqa: ASYNC110 - polling a counter
                await anyio.sleep(0.05)  # poll interval of this bounded wait
        run.stop()
    source = run.stats.stages[0]
    assert len(sink.items) == source.received
    assert source.received + source.lost == count


class Held(CollectSink[Getppid]):
    """Holds its first batch until ``release`` is set: the source's reader
    waits on the full edge meanwhile and reads no loss counter."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()

    async def write(self, batch: list[Getppid]) -> None:
        await self.release.wait()
        await super().write(batch)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["ringbuf", "perf"])
async def test_loss_is_read_again_after_the_stop(transport: str) -> None:
    """The flood overflows the one-page buffer while the reader is held; its
    loss is only final once read after the stop."""
    count = 200_000
    workload = getppid_loop(count)
    sink = Held()
    pipeline = Pipeline(getppid_source(workload.pid, 1, transport), [], sink, capacity=1)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        await anyio.to_thread.run_sync(workload.go)
        run.stop()
        sink.release.set()
    source = run.stats.stages[0]
    assert source.lost > 0 and run.stats.dropped == 0, run.stats.summary()
    assert len(sink.items) == source.received
    assert source.received + source.lost == count


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["ringbuf", "perf"])
async def test_records_still_in_the_buffer_when_a_stop_is_cut_off_count_as_unread(
    transport: str,
) -> None:
    """The sink never takes its first batch: the source waits on the full
    edge, the stop's deadline cuts the drain off, and every record the
    reader never took is counted where it was left (it reads at most three
    batches of 8,192: one to the sink, one to the edge, one waiting)."""
    count = 100_000
    workload = getppid_loop(count)
    sink = Held()  # never released
    pipeline = Pipeline(getppid_source(workload.pid, 4096, transport), [], sink, capacity=1)
    run = Run(pipeline, drain_timeout=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(run.run)
        await anyio.to_thread.run_sync(workload.go)
        run.stop()
    source = run.stats.stages[0]
    assert source.received + run.stats.lost == count, run.stats.summary()
    unread = source.dropped["unread_at_stop"]
    assert unread > 0 and sink.items == []
    # the rest: the batch the sink held, and what the edge and the reorder held
    assert unread + source.dropped.get("stop_deadline", 0) + source.emitted == source.received
    assert source.emitted == run.stats.stages[1].received


@pytest.mark.anyio
async def test_unflooded_source_delivers_everything() -> None:
    count = 50_000
    workload = getppid_loop(count)
    # 16 MiB holds 400k records: the whole burst fits even if the reader stalls
    events = await collect(getppid_source(workload.pid, pages=4096), workload.go)
    assert len(events) == count
    assert {e.pid for e in events} == {workload.pid}


class Failing(CollectSink[Getppid]):
    async def write(self, batch: list[Getppid]) -> None:
        raise RuntimeError("disk full")


@pytest.mark.anyio
async def test_failing_stage_detaches_every_probe() -> None:
    workload = getppid_loop(10)
    pipeline = Pipeline(getppid_source(workload.pid, pages=8), [], Failing("failing"), capacity=1)
    with pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            await anyio.to_thread.run_sync(workload.go)
            with anyio.fail_after(10):  # until the failing stage cancels the group
                await anyio.sleep_forever()
    assert info.group_contains(StageError, match="stage 'failing' failed: RuntimeError: disk full")
    # the kernel guard fixture asserts nothing stayed loaded or attached


def test_kprobe_alternative_compiles_and_loads_here() -> None:
    """Alternatives that cannot attach on this kernel still build and load."""
    from bcc import BPF

    probe = Probe("entry of sync(2)", Kprobe(syscall="sync"), Kprobe(function="vfs_read"))
    source = KernelSource(Getppid, probe)
    for alternative in probe.alternatives:
        program = source.program([Choice(probe, alternative, ())])
        with bpf_program(program.text) as bpf:
            for _, fn in program.entries:
                assert bpf.load_func(fn.encode(), BPF.KPROBE).fd >= 0


def _kprobe_attaches() -> bool:
    """bcc's own answer: only its refusal to attach means no; any other
    error (the program does not build, no permission) fails the test."""
    with bpf_program("int probe(struct pt_regs *ctx) { return 0; }") as bpf:
        try:
            bpf.attach_kprobe(event=str(kernel.syscall_function("sync")).encode(), fn_name=b"probe")
        except Exception as exc:
            if "Failed to attach BPF program" not in str(exc):
                raise
            return False
        return True


def _uprobe_attaches() -> bool:
    """A uprobe on libc's getpid, attached by bcc (same refusal rule)."""
    with bpf_program("int probe(struct pt_regs *ctx) { return 0; }") as bpf:
        try:
            bpf.attach_uprobe(name=b"c", sym=b"getpid", fn_name=b"probe")
        except Exception as exc:
            if "Failed to attach BPF" not in str(exc):
                raise
            return False
        return True


def _fentry_loads() -> bool:
    """Tried in a child process: bcc leaks a BTF handle when the load fails."""
    text = f"KFUNC_PROBE({kernel.syscall_function('sync')}) {{ return 0; }}"
    child = subprocess.run(
        [sys.executable, "-c", f"from bcc import BPF; BPF(text={text.encode()!r}).cleanup()"],
        capture_output=True,
    )
    return child.returncode == 0


def test_doctor_tells_the_truth_about_kprobes_uprobes_and_fentry() -> None:
    features = kernel.features()
    assert features["kprobes"].available == _kprobe_attaches()
    assert features["uprobes"].available == _uprobe_attaches()
    assert features["fentry"].available == _fentry_loads()


def test_no_alternative_fits_gives_one_clear_error() -> None:
    from flowtrace import AttachError, Tracepoint
    from flowtrace.plan import resolve_probe

    probe = Probe(
        "something absent", Tracepoint("nosuch", "event"), Kprobe(function="no_such_function_x")
    )
    with pytest.raises(AttachError) as info:
        resolve_probe(probe)
    message = str(info.value)
    assert "cannot observe something absent" in message
    assert "tracepoint nosuch:event: no tracepoint nosuch:event" in message
    assert "kprobe no_such_function_x" in message
    assert "\n" not in message


@pytest.mark.anyio
async def test_program_that_does_not_compile_is_a_clean_error() -> None:
    probe = Probe(
        "entry of sync(2)", *syscall_entry_points("sync"), body="e.pid = no_such_variable;"
    )
    pipeline = Pipeline(KernelSource(Getppid, probe, name="broken"), [], CollectSink[Getppid]())
    with pytest.raises(StageError, match="stage 'broken' failed: KernelError: bcc could not load"):
        await pipeline.run()
    # with an operator in its program, the error says how to run it without
    source = KernelSource(Getppid, probe, name="broken")
    pushed = Pipeline(source, [filter(F.pid == 1)], CollectSink[Getppid]())
    assert pushed.placement().in_kernel == 1
    with pytest.raises(StageError) as info:
        await pushed.run()
    message = str(info.value)
    assert message.startswith("stage 'broken' failed: KernelError: bcc could not load"), message
    assert message.endswith(
        " (its program also runs operators; with --no-pushdown, Pipeline(pushdown=False),"
        " they run in Python)"
    ), message


async def _count_syncs_embedded() -> tuple[list[int], list[int]]:
    """An application's task group running a kernel pipeline. Stopping right
    after the workload loses nothing: the source drains its buffer on stop."""
    from flowtrace.sources.syscalls import SyncCall, sync_calls

    sink = CollectSink[SyncCall]()
    pipeline = Pipeline(sync_calls(), [], sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        pids = await anyio.to_thread.run_sync(run_syncs, 2)
        run.stop()
    return pids, [e.pid for e in sink.items if e.pid in pids]


@pytest.mark.asyncio
async def test_kernel_pipeline_embedded_in_asyncio() -> None:
    pids, seen = await _count_syncs_embedded()
    assert sorted(seen) == sorted(pids)


def test_kernel_pipeline_embedded_in_trio() -> None:
    import trio

    pids, seen = trio.run(_count_syncs_embedded)
    assert sorted(seen) == sorted(pids)


# -- probe runs the kernel skips ------------------------------------------------


class Printed(Event, frozen=True):
    pid: task_pid


# prints once per getppid(2) of process PID
PRINTER = """
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) == PID)
        bpf_trace_printk("flowtrace test\\\\n");
    return 0;
}
"""


@pytest.mark.anyio
async def test_probe_runs_the_kernel_skips_count_as_lost() -> None:
    """A probe on bpf_trace_printk that prints itself: the run its own print
    starts comes while the program is running on that CPU, so the kernel
    skips it (and counts it). Each of our prints gives one event and one
    skipped run, which the run counts as lost and says so."""
    calls = 5
    printer = Probe(
        "bpf_trace_printk, printing again",
        RawTracepoint("bpf_trace_printk"),
        body='bpf_trace_printk("flowtrace test, again\\\\n");',
    )
    source = KernelSource(Printed, printer, name="printk")
    sink = CollectSink[Any]()
    reports: list[str] = []
    me = os.getpid()
    with bpf_program(PRINTER.replace("PID", str(me))):
        async with anyio.create_task_group() as tg:
            run = await tg.start(lambda task_status: Pipeline(source, [], sink).run(
                report=reports.append, task_status=task_status))
            await anyio.to_thread.run_sync(lambda: [os.getppid() for _ in range(calls)])
            run.stop()
    assert [e.pid for e in sink.items] == [me] * calls
    printk = run.stats.stage("printk")
    assert (printk.received, printk.lost) == (calls, calls), run.stats.summary()
    skipped = f"{calls} probe runs skipped by the kernel while another BPF program ran"
    assert any(skipped in line for line in reports), reports
