"""Events from per-CPU perf buffers and the ring buffer reach the pipeline
in timestamp order (the reorder window, and the in-flight count that lets
events go without waiting for it), with two CPUs busy switching."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.to_thread
import pytest
from kernelrun import collect
from workloads import Gated, run_syncs

from flowtrace import Event, Param, Pipeline, Probe, Tracepoint, kernel_source, tracepoint
from flowtrace.codegen import IN_FLIGHT_MAP
from flowtrace.kernel import mmapable_arrays
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import cpu_id, ktime_ns, task_pid, u64
from flowtrace.reorder import DEFAULT_WINDOW
from flowtrace.testing import CollectSink

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]


def busy_on_every_cpu() -> None:
    """Short-lived processes on every CPU for a moment: forks, execs and
    context switches on all of them at once."""
    cpus = os.cpu_count() or 1
    workers = [
        subprocess.Popen(
            ["sh", "-c", "i=0; while [ $i -lt 150 ]; do /bin/true; i=$((i+1)); done"]
        )
        for _ in range(cpus * 2)
    ]
    for worker in workers:
        assert worker.wait(60) == 0


def out_of_order(items: list[Any]) -> int:
    """Events older than one before them."""
    newest, count = -1, 0
    for item in items:
        if item.ts < newest:
            count += 1
        newest = max(newest, item.ts)
    return count


MINUTE = 60.0  # a window no event waits out here: only the in-flight count releases


async def traced(
    transport: str, reorder: float | None, latency: float | None = None
) -> tuple[list[Any], int, int]:
    """The events of ``busy_on_every_cpu``, the source's ``late`` count, and
    how many events had reached the sink before the stop."""
    source = tracepoint("sched:sched_switch", transport=transport)
    source.reorder = reorder
    sink = CollectSink[Any]()
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink, latency=latency).run)
        await anyio.to_thread.run_sync(busy_on_every_cpu)
        before_stop = len(sink.items)
        run.stop()
    stage = run.stats.stages[0]
    assert run.stats.lost == 0 and stage.received == stage.emitted == len(sink.items)
    return sink.items, stage.late, before_stop


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
@pytest.mark.parametrize("window", [0.01, DEFAULT_WINDOW])
async def test_events_of_several_cpus_arrive_in_timestamp_order(
    transport: str, window: float
) -> None:
    """The default window (1 ms) is enough: the reader's clock is read
    before each read, so only a probe's own time between its timestamp and
    its commit could make an event late, however slow the reader is."""
    items, late, _ = await traced(transport, window)
    assert len(items) > 1000
    assert out_of_order(items) == late == 0


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
async def test_events_released_by_the_in_flight_count_are_in_timestamp_order(
    transport: str,
) -> None:
    """With a window of a minute, every event the sink has before the stop
    was released because no probe was in flight: those releases keep
    timestamp order too, with both CPUs switching all the time."""
    items, late, before_stop = await traced(transport, MINUTE, latency=MINUTE)
    assert len(items) > 1000
    assert before_stop > 0
    assert out_of_order(items) == late == 0


def test_this_kernel_maps_the_in_flight_counts() -> None:
    """The build kernel (6.x) lets user space map arrays: the program counts
    its probes in flight in an array the reader maps."""
    assert mmapable_arrays()
    text = tracepoint("sched:sched_switch").program().text
    assert "BPF_F_MMAPABLE" in text and IN_FLIGHT_MAP in text


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
async def test_a_kernel_that_cannot_map_arrays_gets_no_count_and_the_window_orders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before Linux 5.5 arrays cannot be mapped: the program then has no
    in-flight count (nothing for the reader to map), and the window alone
    keeps events in timestamp order."""
    monkeypatch.setattr(kernel_source, "mmapable_arrays", lambda: False)
    source = tracepoint("sched:sched_switch", transport="ringbuf")
    assert source.program().in_flight is None
    assert IN_FLIGHT_MAP not in source.program().text
    items, late, _ = await traced("ringbuf", DEFAULT_WINDOW)
    assert len(items) > 1000
    assert out_of_order(items) == late == 0


class Wrote:
    """Set on each write (shared by the run's copy of the sink)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        self._event = anyio.Event()


class Signalling(CollectSink[Any]):
    """Collects, and says when a batch was written."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = Wrote()

    async def write(self, batch: list[Any]) -> None:
        await super().write(batch)
        self.wrote.set()


@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
async def test_a_lone_event_goes_on_without_waiting_for_the_window(transport: str) -> None:
    """One sync(2) with a reorder window of a minute reaches the sink while
    the run goes on: the in-flight count said no earlier event could come."""
    source = tracepoint("syscalls:sys_enter_sync", transport=transport)
    source.reorder = MINUTE
    sink = Signalling()
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink, latency=MINUTE).run)
        [pid] = await anyio.to_thread.run_sync(run_syncs, 1)
        with anyio.fail_after(MINUTE / 2):  # bounds the wait, well inside the window
            while not any(e.pid == pid for e in sink.items):
                await sink.wrote.wait()
                sink.wrote.clear()
        run.stop()
    assert [e.pid for e in sink.items].count(pid) == 1
    assert run.stats.stages[0].late == 0


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
async def test_without_the_window_perf_buffer_events_are_out_of_order() -> None:
    """The problem the window solves, seen on this machine: per-CPU rings
    read one after another interleave out of order."""
    items, late, _ = await traced("perf", None)
    assert out_of_order(items) > 0
    assert late == 0  # nothing counted when nothing is reordered


class Closing(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    cpu: cpu_id
    in_flight: u64


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the count is kept when several CPUs write")
async def test_every_return_path_counts_its_probe_out() -> None:
    """A process on CPU 0 closes fd 9998 and fd 9999 in turn, 50 times; the
    probe returns early (skips) for 9998 and emits for 9999, each event
    carrying the in-flight count its probe saw on its CPU: exactly 1 (itself)
    every time, so each skipped call counted itself out too."""
    workload = Gated(
        "os.sched_setaffinity(0, {0})\n"
        "for _ in range(50):\n"
        "    for fd in (9998, 9999):\n"
        "        try:\n"
        "            os.close(fd)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    probe = Probe(
        "close(2) of fd 9999 by the workload",
        Tracepoint("syscalls", "sys_enter_close"),
        params=[Param("fd")],
        body=f"""
if (e.pid != {workload.pid} || fd != 9999)
    return 0;
int cpu = bpf_get_smp_processor_id();
struct ft_in_flight_slot *slot = {IN_FLIGHT_MAP}.lookup(&cpu);
e.in_flight = slot ? slot->count : 0;
""",
    )
    source = KernelSource(Closing, probe)
    assert source.program().in_flight == IN_FLIGHT_MAP
    events = await collect(source, workload.go)
    assert [(e.cpu, e.in_flight) for e in events] == [(0, 1)] * 50


class Call(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    cpu: cpu_id


SLOW_CALLS, FAST_CALLS = 1000, 40_000


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs writing")
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
async def test_a_probe_in_flight_holds_back_newer_events_of_other_cpus(transport: str) -> None:
    """A process on CPU 0 calls getppid(2) under a probe that runs on for a
    while (some 0.2 ms) after taking its timestamp, pausing 0.3 ms between
    calls; a process on CPU 1 calls it about every 10 us, its records
    committed at once. With a window of a minute, only the in-flight count
    releases events before the stop: released by the reader's clock alone,
    CPU 1's newer events would go ahead of CPU 0's event still in flight,
    which would then come late."""
    pause = {  # each on its own CPU; CPU 0 between its probes' runs, CPU 1 just a little
        0: "time.sleep(0.0003)",
        1: "t = time.perf_counter()\n    while time.perf_counter() - t < 1e-5:\n        pass",
    }
    workloads = [
        Gated(
            f"import time\nos.sched_setaffinity(0, {{{cpu}}})\nfor _ in range({calls}):\n"
            f"    os.getppid()\n    {pause[cpu]}\n"
        )
        for cpu, calls in ((0, SLOW_CALLS), (1, FAST_CALLS))
    ]
    slow, fast = (w.pid for w in workloads)
    probe = Probe(
        "getppid(2) of the two workloads",
        Tracepoint("syscalls", "sys_enter_getppid"),
        body=f"""
if (e.pid != {slow} && e.pid != {fast})
    return 0;
if (e.pid == {slow})  // as long as the verifier lets a loop run
    for (int i = 0; i < 8000 && bpf_ktime_get_ns() < e.ts + 1000000; i++)
        ;""",
    )
    source = KernelSource(Call, probe, transport=transport)
    source.reorder = MINUTE
    sink = CollectSink[Any]()

    def both() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda w: w.go(), workloads))

    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink, latency=MINUTE).run)
        await anyio.to_thread.run_sync(both)
        before_stop = len(sink.items)
        run.stop()
    events = sink.items
    assert run.stats.lost == 0 and run.stats.dropped == 0, run.stats.summary()
    assert sorted((e.pid, e.cpu) for e in events) == sorted(
        [(slow, 0)] * SLOW_CALLS + [(fast, 1)] * FAST_CALLS
    )
    assert before_stop > 0  # released by the count
    assert out_of_order(events) == run.stats.stages[0].late == 0
