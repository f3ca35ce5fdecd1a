"""The lessons that aggregate in the tutorial aggregate in the kernel too:
placed there by the planner, with the same printed output as in Python,
and strlen_count exact while its own process is stopped under load."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from clirun import Running, flowtrace
from workloads import dd, loop_device, strlen_caller

from flowtrace import Operator, Pipeline
from flowtrace.loader import load_pipeline
from flowtrace.operators import F, filter
from flowtrace.records import Histogram
from flowtrace.sources.syscalls import QUICK_NS
from flowtrace.testing import CollectSink

pytestmark = pytest.mark.kernel

IN_KERNEL = {
    "bitehist.py": ["log2_histogram"],
    "disklatency.py": ["join", "log2_histogram"],
    "vfsreadlat.py": ["log2_histogram"],
    "disksnoop_tp.py": ["join"],
    "strlen_count.py": ["count"],
    "sync_count.py": ["running_count", "filter"],
    "task_switch.py": ["filter", "count"],
}


@pytest.mark.parametrize("lesson", sorted(IN_KERNEL))
def test_explain_shows_the_lessons_aggregation_in_the_kernel(lesson: str) -> None:
    result = flowtrace("explain", "--json", f"pipelines/{lesson}")
    assert result.returncode == 0, result.stderr
    stages = json.loads(result.stdout)
    kernel = [s["stage"] for s in stages[1:-1] if s["where"] == "kernel"]
    assert kernel == IN_KERNEL[lesson]
    assert [s["where"] for s in stages[1:-1]] == ["kernel"] * len(kernel)
    text = flowtrace("explain", f"pipelines/{lesson}").stdout
    assert "BPF_PERCPU_HASH" in text or "BPF_PERCPU_ARRAY" in text or "lru_hash" in text


def printed(pipeline: Pipeline, records: list[Any]) -> str:
    """What the lesson's console sink prints for ``records``."""
    sink = copy.copy(pipeline.sink)
    sink.stream = io.StringIO()  # type: ignore[attr-defined]
    lines = [text for r in records for text in sink.lines(r)]  # type: ignore[attr-defined]
    return "\n".join(lines)


async def lesson_on_loop_device(path: str, count: int) -> tuple[Pipeline, list[Any], list[Any]]:
    """The lesson's records for direct writes to a fresh loop device, with its
    operators in the kernel and in Python at once (a filter on the device
    first, so other disks stay out)."""
    lesson = load_pipeline(f"pipelines/{path}")
    with loop_device() as (device, dev):
        ops: list[Operator[Any, Any]] = [filter(F.dev == dev), *lesson.operators]
        runs = []
        async with anyio.create_task_group() as tg:
            for pushdown in (True, False):
                pipeline = Pipeline(lesson.source, ops, CollectSink[Any](), pushdown=pushdown)
                runs.append(await tg.start(pipeline.run))
            await anyio.to_thread.run_sync(
                lambda: dd(
                    "if=/dev/zero", f"of={device}", "bs=128k", f"count={count}", "oflag=direct"
                )
            )
            for run in runs:
                run.stop()
    assert [run.in_kernel for run in runs] == [len(ops), 0]
    return lesson, runs[0].sink.items, runs[1].sink.items


@pytest.mark.anyio
async def test_bitehist_in_the_kernel_prints_what_it_prints_in_python() -> None:
    lesson, kernel, python = await lesson_on_loop_device("bitehist.py", 6)
    (hist,) = kernel
    assert isinstance(hist, Histogram)
    assert [(b.low, b.high, b.count) for b in hist.buckets if b.count] == [(128, 255, 6)]
    assert printed(lesson, kernel) == printed(lesson, python)
    assert printed(lesson, kernel).splitlines()[1:] == [
        "     kbytes              : count     distribution",
        *(
            f"{lo:>10} -> {hi:<10} : {0:<8} |{'':<40}|"
            for lo, hi in ((0, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, 127))
        ),
        f"{128:>10} -> {255:<10} : {6:<8} |{'*' * 40}|",
    ]


@pytest.mark.anyio
async def test_disklatency_in_the_kernel_holds_every_request() -> None:
    lesson, kernel, python = await lesson_on_loop_device("disklatency.py", 6)
    ((hist,), (plain,)) = kernel, python
    assert isinstance(hist, Histogram) and hist.unit == "usecs"
    assert hist.total == plain.total == 6
    assert (
        printed(lesson, kernel).splitlines()[1]
        == "     usecs               : count     distribution"
    )


@pytest.mark.anyio
async def test_disksnoop_tp_in_the_kernel_prints_each_request() -> None:
    lesson, kernel, python = await lesson_on_loop_device("disksnoop_tp.py", 4)
    lines = printed(lesson, kernel).splitlines()
    assert len(lines) == len(printed(lesson, python).splitlines()) == 4
    assert all(re.fullmatch(r"\d+\.\d{6} +W +131072 +\d+\.\d\d", line) for line in lines)


# -- strlen_count, exact while its own process is stopped --------------------------


LESSON_14_OURS = """\
from flowtrace import Pipeline
from flowtrace.loader import load_pipeline
from flowtrace.operators import F, filter

lesson = load_pipeline("pipelines/strlen_count.py")
# strlen_count, for this test's own processes only: the rest of the machine
# calls strlen with thousands of other strings, which would fill the table
pipeline = Pipeline(
    lesson.source, [filter(F.comm == "strlen_calls"), *lesson.operators], lesson.sink
)
"""


def test_strlen_count_is_exact_while_its_process_is_stopped_under_load(tmp_path: Path) -> None:
    """Two processes flood strlen; the pipeline's own process is stopped for
    3 s in the middle, while a fixture calls strlen on known strings; after
    it resumes, every count is exact and nothing was lost."""
    lesson = tmp_path / "strlen_count_ours.py"
    lesson.write_text(LESSON_14_OURS)
    assert [p.where for p in load_pipeline(str(lesson)).places()] == ["kernel"] * 3 + ["user"]
    tag = uuid.uuid4().hex[:8]
    floods = {f"flood-{tag}-a": 400_000, f"flood-{tag}-b": 400_000}
    fixture = {f"fixture-{tag}-alpha": 3, f"fixture-{tag}-beta": 7, f"fixture-{tag}": 1}
    run = Running(str(lesson))
    flooders = [strlen_caller({text: n}) for text, n in floods.items()]
    for f in flooders:
        assert f.process.stdin is not None
        f.process.stdin.write("go\n")
        f.process.stdin.flush()
    time.sleep(0.5)  # the scenario: the floods run half a second, then the reader stops
    run.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    strlen_caller(fixture).go()
    time.sleep(max(0.0, 3 - (time.monotonic() - stopped)))  # the scenario: stopped 3 s
    assert all(f.process.poll() is None for f in flooders), "the flood ended before the stop did"
    run.process.send_signal(signal.SIGCONT)
    for f in flooders:
        f.process.communicate(timeout=120)
        assert f.process.returncode == 0
    code, out, err = run.stop()
    assert code == 0, err
    counted = {
        m[2]: int(m[1]) for m in re.finditer(r'^ +(\d+) "(\S+)"$', out, re.MULTILINE) if tag in m[2]
    }
    assert counted == {**floods, **fixture}
    summary = [line for line in err.splitlines() if line.startswith("flowtrace: ")]
    assert any(line.startswith("flowtrace: strlen: ") for line in summary), err
    assert not any("lost" in line or "dropped" in line for line in summary), err


# -- sync_count: a running count in the kernel ----------------------------------


def quick_then_slow_syncs(command: Path) -> list[int]:
    """``command`` (sync under another name) three times 0.1 s apart, then,
    after a pause over a second, twice 0.1 s apart; the pids."""

    def syncs(count: int) -> list[int]:
        pids = []
        for i in range(count):
            if i:
                time.sleep(0.1)  # the workload's own pacing: quick syncs
            proc = subprocess.Popen([command])
            pids.append(proc.pid)
            assert proc.wait(60) == 0
        return pids

    first = syncs(3)
    time.sleep(1.2)  # the workload's own pacing: a pause over a second
    return first + syncs(2)


@pytest.mark.anyio
async def test_sync_count_in_the_kernel_reports_what_python_reports(tmp_path: Path) -> None:
    """The lesson's operators behind a filter on a command name of this
    test's own (other tests on the machine call sync too), in the kernel
    and in Python at once."""
    lesson = load_pipeline("pipelines/sync_count.py")
    name = f"ftsync-{uuid.uuid4().hex[:8]}"
    command = tmp_path / name
    command.symlink_to(shutil.which("sync") or "/bin/sync")
    ops: list[Operator[Any, Any]] = [filter(F.comm == name), *lesson.operators]
    pids: list[int] = []
    async with anyio.create_task_group() as tg:
        runs = []
        for pushdown in (True, False):
            pipeline = Pipeline(lesson.source, ops, CollectSink[Any](), pushdown=pushdown)
            runs.append(await tg.start(pipeline.run))
        await anyio.to_thread.run_sync(lambda: pids.extend(quick_then_slow_syncs(command)))
        for run in runs:  # the stop's drain delivers what the kernel holds
            run.stop()
    assert [run.in_kernel for run in runs] == [3, 0]
    kernel, python = (run.sink.items for run in runs)
    # the first sync follows no recent one, nor the fourth (after the pause)
    assert [e.pid for e in kernel] == [e.pid for e in python] == [pids[1], pids[2], pids[4]]
    assert [e.seq for e in kernel] == [e.seq for e in python] == [2, 3, 5]
    for k, p in zip(kernel, python, strict=True):
        assert 100_000_000 <= k.gap < QUICK_NS
        # each program reads the clock itself, one after the other at the same
        # sync: an interrupt between them shifts one reading (0.2 ms seen in CI)
        assert abs(k.gap - p.gap) < 2_000_000
    running = runs[0].stats.stages[2]
    assert running.received == running.emitted == 5  # every sync, only the quick ones left
    assert runs[0].stats.stages[3].emitted == 3
    pattern = r"At time \d+\.\d\d s: multiple syncs detected, last (\d+) ms ago \(sync count (\d)\)"
    lines = [re.fullmatch(pattern, text) for text in printed(lesson, kernel).splitlines()]
    assert [m[2] if m else None for m in lines] == ["2", "3", "5"]
