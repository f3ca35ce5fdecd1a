"""The perf-buffer transport switches between rings that wake the reader
per record (slow records) and in bulk (fast records) without losing,
repeating or misordering an event."""

from __future__ import annotations

import os

import pytest
from kernelrun import collect
from workloads import Gated

from flowtrace import Event, KernelSource, Probe, syscall_entry_points
from flowtrace.ktypes import ktime_ns, task_pid
from flowtrace.transport import PerfBufferReader

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]

SLOW, BURST = 20, 50_000


class Getppid(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid


def slow_burst_slow() -> Gated:
    """getppid(2): SLOW calls 10 ms apart, BURST at once, SLOW 10 ms apart."""
    slow = f"for _ in range({SLOW}):\n    g()\n    time.sleep(0.01)\n"
    burst = f"for _ in range({BURST}):\n    g()\n"
    return Gated("import time\ng = os.getppid\n" + slow + burst + slow)


async def test_slow_then_fast_then_slow_records_all_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    switches: list[bool] = []
    real = PerfBufferReader.wake_per_record

    def watched(reader: PerfBufferReader, yes: bool) -> None:
        if yes != reader.per_record:
            switches.append(yes)
        real(reader, yes)

    monkeypatch.setattr(PerfBufferReader, "wake_per_record", watched)
    workload = slow_burst_slow()
    probe = Probe(
        "entry of getppid(2)",
        *syscall_entry_points("getppid"),
        body=f"if (e.pid != {workload.pid}) return 0;",
    )
    # 16 MiB: the burst fits in the bulk rings, and in the prompt rings
    # until the switch, however late the reader is
    # one CPU and no reorder buffer: the order seen is the transport's own
    os.sched_setaffinity(workload.pid, {0})
    source = KernelSource(Getppid, probe, transport="perf", buffer_pages=4096, reorder=None)
    events = await collect(source, workload.go)  # checks: nothing lost or dropped
    assert len(events) == 2 * SLOW + BURST
    assert {e.pid for e in events} == {workload.pid}
    assert [e.ts for e in events] == sorted({e.ts for e in events})  # none twice, in order
    # to the bulk rings for the burst, back to waking per record after it
    assert switches[0] is False and switches[-1] is True, switches
