"""Stopping is prompt and accounted, whatever a stage is doing: probes detach
at the stop itself, the drain has a deadline, and what is cut off is counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from workloads import getppid_loop

from flowtrace import Run, Sink, StageContext, syscall_entry
from flowtrace.operators import map
from flowtrace.stats import PipelineStats
from flowtrace.testing import ListSource


class Stalled(Sink[Any]):
    """Takes the first batch, then never returns from ``write`` (a peer that
    stopped reading); ``close`` would never return either."""

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.first = True

    async def write(self, batch: list[Any]) -> None:
        if self.first:
            self.first = False
            return
        await anyio.sleep_forever()

    async def close(self) -> None:
        await anyio.sleep_forever()


def accounted(stats: PipelineStats) -> None:
    """Every stage: in = out + dropped; every edge: out of one = in of the next."""
    for stage in stats.stages:
        assert stage.received == stage.emitted + stage.dropped_total, stats.summary()
    for up, down in zip(stats.chain, stats.chain[1:], strict=False):
        assert up.emitted == down.received, stats.summary()


async def holding(run: Run) -> None:
    """Wait (bounded) until the stalled sink holds a batch and one waits behind it."""
    with anyio.fail_after(10):
        while run.stats.stages[-1].received < 200:  # noqa: ASYNC110 - polling a counter
            await anyio.sleep(0.001)  # poll interval of this bounded wait


@pytest.mark.anyio
async def test_a_stalled_sink_cannot_hold_a_stop_past_its_deadline() -> None:
    source = ListSource(range(100_000), batch_size=100, interval=0.001)
    run = Run(source | map(lambda x: x) | Stalled(), drain_timeout=0.3)
    with anyio.fail_after(3):  # the drain's 0.3 s, close's 0.3 s, and room to spare
        async with anyio.create_task_group() as tg:
            await tg.start(run.run)
            await holding(run)
            run.stop()
    accounted(run.stats)
    dropped = {s.name: s.dropped.get("stop_deadline", 0) for s in run.stats.stages}
    assert sum(dropped.values()) > 0, run.stats.summary()
    assert dropped["Stalled"] == run.stats.stages[-1].received - 100
    assert any("cutting the run off" in line for line in run.stats.attached)


@pytest.mark.anyio
async def test_cancelling_a_run_counts_what_was_in_flight() -> None:
    source = ListSource(range(10_000), batch_size=100, interval=0.001)
    # the stalled sink's close is given the drain deadline even when
    # cancelled: a short one ends the test sooner and proves the same
    run = Run(source | map(lambda x: x) | Stalled(), drain_timeout=0.3)
    with anyio.fail_after(3):  # the close's 0.3 s and room to spare
        async with anyio.create_task_group() as tg:
            await tg.start(run.run)
            await holding(run)
            tg.cancel_scope.cancel()  # what a second Ctrl-C does
    accounted(run.stats)
    assert run.stats.dropped > 0


def _perf_events() -> int:
    """Attachments (perf events) this process holds."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:[perf_event]"
        except OSError:
            continue
    return count


@pytest.mark.kernel
@pytest.mark.anyio
async def test_the_stop_detaches_at_once_while_the_sink_is_stalled() -> None:
    # the drain deadline (1.5 s) is past the 1 s the detach may take: a
    # detach only at the cut-off would fail
    run = Run(syscall_entry("getppid") | Stalled(), drain_timeout=1.5)
    before = _perf_events()
    loop = getppid_loop(200_000)
    async with anyio.create_task_group() as tg:
        await tg.start(run.run)
        attached = _perf_events()
        await anyio.to_thread.run_sync(loop.go)
        started = anyio.current_time()
        run.stop()
        with anyio.fail_after(1.0):
            while _perf_events() != before:  # noqa: ASYNC110 - polling the process's fds
                await anyio.sleep(0.001)  # poll interval of this bounded wait
        detached_in = anyio.current_time() - started
        assert before < attached
    assert detached_in < 1.0
    source = run.stats.stages[0]
    accounted(run.stats)
    # every getppid of the loop was taken in (delivered, cut off, or left
    # unread at the stop) or lost; other processes may call getppid too
    assert source.received + source.lost >= 200_000


FLOWTRACE = str(Path(sys.executable).with_name("flowtrace"))


@pytest.mark.kernel
def test_a_fifo_nobody_reads_does_not_hold_the_run(tmp_path: Path) -> None:
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = subprocess.run(
        [FLOWTRACE, "run", "--duration", "1", "--drain-timeout", "0.5",
         "--sink", f"ndjson:{fifo}", "pipelines/sys_sync.py"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"waiting for a reader of the FIFO {fifo}" in done.stderr
    assert took < 1 + 0.5 + 0.5 + 3  # duration, drain, close, start-up and detach


@pytest.mark.kernel
def test_a_reader_that_stops_reading_does_not_hold_the_run(tmp_path: Path) -> None:
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opens, never reads
    try:
        loop = getppid_loop(300_000)
        running = subprocess.Popen(
            [FLOWTRACE, "run", "--drain-timeout", "0.5", "--sink", f"ndjson:{fifo}",
             "-e", 'syscall_entry("getppid")'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert running.stderr is not None
        for line in running.stderr:
            if "attached" in line:
                break
        loop.go()  # far more than the pipe holds
        started = time.monotonic()
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        os.close(reader)
    assert running.returncode == 0, err
    assert took < 0.5 + 0.5 + 2
    assert "dropped (stop_deadline)" in err or "dropped (write_error)" in err, err
