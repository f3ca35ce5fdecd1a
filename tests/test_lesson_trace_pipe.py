"""The trace_pipe source for real: it sees only its own lines, takes none
from other readers of the shared pipe, and leaves no tracefs instance."""

from __future__ import annotations

import fcntl
import os
import subprocess
import uuid
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from clirun import FLOWTRACE, Running, flowtrace
from workloads import forker, run_syncs

from flowtrace import Pipeline, Probe, syscall_entry_points
from flowtrace.kernel import tracefs
from flowtrace.testing import CollectSink
from flowtrace.trace_pipe import (
    LOCKS,
    MAX_READS,
    TraceFields,
    TracePipeSource,
    _Pipe,
    parse_trace_line,
)

pytestmark = pytest.mark.kernel


def instances(pid: int | None = None) -> list[str]:
    """The tracefs instances of flowtrace process ``pid`` (default: this one;
    other test runs on the machine make and remove their own meanwhile)."""
    root = tracefs()
    assert root is not None
    owner = os.getpid() if pid is None else pid
    return sorted(p.name for p in (root / "instances").glob(f"flowtrace-{owner}-*"))


def sync_printer(text: str) -> TracePipeSource:
    return TracePipeSource(
        Probe("entry of sync(2)", *syscall_entry_points("sync"), body=f'ft_printk("{text} %d", 7);')
    )


@pytest.mark.anyio
async def test_two_sources_each_see_only_their_own_lines() -> None:
    before = instances()
    sinks = [CollectSink[TraceFields](), CollectSink[TraceFields]()]
    texts = ("one", "two")
    pipelines = [Pipeline(sync_printer(t), [], s) for t, s in zip(texts, sinks, strict=True)]
    pids: list[int] = []
    async with anyio.create_task_group() as tg:
        runs = [await tg.start(pipeline.run) for pipeline in pipelines]
        assert len(instances()) == len(before) + 2
        await anyio.to_thread.run_sync(lambda: pids.extend(run_syncs(3)))
        for run in runs:
            run.stop()
    for text, sink in zip(texts, sinks, strict=True):
        ours = [e for e in sink.items if e.pid in pids]
        assert [(e.pid, e.task, e.msg) for e in ours] == [(p, "sync", f"{text} 7") for p in pids]
        assert {e.msg for e in sink.items} == {f"{text} 7"}
    assert instances() == before
    assert [r.stats.stages[0].lost for r in runs] == [0, 0]


@pytest.mark.anyio
async def test_one_source_run_twice_at_once_gives_each_run_every_line() -> None:
    """Each run has its own marker and tracefs instance: neither run sees
    the other's lines twice, and neither misses one."""
    before = instances()
    source = sync_printer("both")
    sinks = [CollectSink[TraceFields](), CollectSink[TraceFields]()]
    pipelines = [Pipeline(source, [], sink) for sink in sinks]
    async with anyio.create_task_group() as tg:
        runs = [await tg.start(pipeline.run) for pipeline in pipelines]
        assert len(instances()) == len(before) + 2
        pids = await anyio.to_thread.run_sync(run_syncs, 4)
        for run in runs:
            run.stop()
    for sink in sinks:
        ours = [(e.pid, e.task, e.msg) for e in sink.items if e.pid in pids]
        assert ours == [(p, "sync", "both 7") for p in pids]
    assert instances() == before
    assert [r.stats.stages[0].lost for r in runs] == [0, 0]


def _read_shared_pipe() -> str:
    root = tracefs()
    assert root is not None
    fd = os.open(root / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.anyio
async def test_lines_of_other_programs_stay_in_the_shared_pipe_for_their_reader() -> None:
    from bcc import BPF

    other = f"other-{uuid.uuid4().hex[:8]}"
    text = (
        f'TRACEPOINT_PROBE(syscalls, sys_enter_sync) {{ bpf_trace_printk("{other}"); return 0; }}'
    )
    bpf = BPF(text=text.encode())
    try:
        sink = CollectSink[TraceFields]()
        pipeline = Pipeline(sync_printer("mine"), [], sink)
        async with anyio.create_task_group() as tg:
            run = await tg.start(pipeline.run)
            pids = await anyio.to_thread.run_sync(run_syncs, 2)
            run.stop()
    finally:
        bpf.cleanup()
    assert [e.msg for e in sink.items if e.pid in pids] == ["mine 7", "mine 7"]
    assert all(other not in e.msg for e in sink.items)
    # the other program prints on every sync(2) on the machine: count the test's own
    shared = [parse_trace_line(line) for line in _read_shared_pipe().splitlines()]
    theirs = [p.pid for p in shared if isinstance(p, TraceFields) and p.msg == other]
    assert [pid for pid in theirs if pid in pids] == pids


def test_instances_of_ended_runs_are_removed_on_start_and_live_ones_kept() -> None:
    """An instance is stale when its lock file can be locked (its run ended
    without removing it); a live run holds its lock; without a lock file an
    instance is left alone."""
    root = tracefs()
    assert root is not None
    LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale, live, unknown = (
        root / "instances" / f"flowtrace-{n}-ft0000000{n}" for n in (999991, 999992, 999993)
    )
    for instance in (stale, live, unknown):
        instance.mkdir()
    (LOCKS / f"{stale.name}.lock").touch()
    held = os.open(LOCKS / f"{live.name}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        result = flowtrace("run", "--duration", "0.5", "pipelines/hello_world.py")
        assert result.returncode == 0, result.stderr
        assert (stale.exists(), live.exists(), unknown.exists()) == (False, True, True)
        assert not (LOCKS / f"{stale.name}.lock").exists()
    finally:
        os.close(held)
        for instance in (stale, live, unknown):
            if instance.exists():
                instance.rmdir()
            (LOCKS / f"{instance.name}.lock").unlink(missing_ok=True)


def test_a_run_in_another_pid_namespace_leaves_a_live_instance_alone() -> None:
    """A run started in a new PID namespace sees no process of the first run's
    pid: it must still not take the first run's instance for a stale one."""
    first = Running("--duration", "20", "pipelines/hello_world.py")
    try:
        mine = instances(first.process.pid)
        assert len(mine) == 1
        other = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", FLOWTRACE, "run",
             "--duration", "0.5", "pipelines/hello_world.py"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        assert instances(first.process.pid) == mine
        forks = forker(3)
        forks.go()
        code, out, err = first.stop()
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert code == 0, err
    assert sum(f"-{forks.pid} " in line for line in out.splitlines()) == 3, out


def test_explain_shows_the_marked_printk_program() -> None:
    result = flowtrace("explain", "pipelines/sync_timing.py")
    assert result.returncode == 0, result.stderr
    assert "source quick_syncs: ft_printk lines marked 'ft" in result.stdout
    assert 'bpf_trace_printk("ft' in result.stdout
    assert "BPF_HASH(ft_sync_state, u64, u64, 1)" in result.stdout


@pytest.mark.anyio
async def test_lines_the_kernel_refuses_to_print_are_counted_as_lost() -> None:
    from workloads import getppid_loop

    calls = 20
    workload = getppid_loop(calls)
    body = f"if ((bpf_get_current_pid_tgid() >> 32) != {workload.pid})\n    return 0;\n"
    body += 'ft_printk("a control code \\001 is refused");'
    probe = Probe("entry of getppid(2)", *syscall_entry_points("getppid"), body=body)
    source = TracePipeSource(probe)
    sink = CollectSink[TraceFields]()
    pipeline = Pipeline(source, [], sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        await anyio.to_thread.run_sync(workload.go)
        run.stop()
    assert sink.items == []
    assert run.stats.stages[0].lost == calls


@pytest.mark.anyio
async def test_without_private_instances_the_shared_pipe_is_read_by_marker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kernels before 5.10 print bpf_trace_printk lines to the shared buffer only."""
    import flowtrace.trace_pipe

    monkeypatch.setattr(flowtrace.trace_pipe._Pipe, "private_possible", lambda self: False)
    before = instances()
    sink = CollectSink[TraceFields]()
    pipeline = Pipeline(sync_printer("shared"), [], sink)
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        assert instances() == before
        pids = await anyio.to_thread.run_sync(run_syncs, 2)
        run.stop()
    assert [(e.pid, e.msg) for e in sink.items if e.pid in pids] == [(p, "shared 7") for p in pids]
    assert {e.msg for e in sink.items} == {"shared 7"}
    assert any("reading the shared " in line for line in run.stats.attached)


def _file_pipe(tmp_path: Path, text: str) -> _Pipe:
    """A pipe reader over a file holding ``text`` instead of trace_pipe."""
    pipe = _Pipe("ft12345678")
    path = tmp_path / "trace_pipe"
    path.write_text(text)
    pipe.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    return pipe


def test_marked_lines_that_do_not_parse_are_counted_as_lost(tmp_path: Path) -> None:
    good = "          python3-42      [001] d..31  5.000001: bpf_trace_printk: ft12345678 sh\thi"
    text = "\n".join(
        [
            good,
            "a marked line ft12345678 sh\thi in no trace format",  # ours, unparsable: lost
            "another program's line in no trace format",  # not ours: ignored
            "          python3-42      [001] d..31  5.000002: bpf_trace_printk: someone else",
            "CPU:1 [LOST 3 EVENTS]",
            "",
        ]
    )
    pipe = _file_pipe(tmp_path, text)
    try:
        assert [(e.pid, e.task, e.msg) for e in pipe.read(100)] == [(42, "sh", "hi")]
        assert pipe.lost() == 1 + 3
    finally:
        pipe.close()


def test_one_read_takes_a_bounded_number_of_chunks(tmp_path: Path) -> None:
    line = "          python3-42      [001] d..31  5.000001: bpf_trace_printk: ft12345678 sh\t{}\n"
    count = 40_000  # about 3.4 MB: more than one read takes
    text = "".join(line.format(n) for n in range(count))
    assert len(text) > 2 * MAX_READS * (1 << 16)
    pipe = _file_pipe(tmp_path, text)
    try:
        reads = []
        while True:
            before = os.lseek(pipe.fd, 0, os.SEEK_CUR)
            reads.append(pipe.read(count))
            assert os.lseek(pipe.fd, 0, os.SEEK_CUR) - before <= MAX_READS * (1 << 16)
            if not pipe.more:
                break
        assert len(reads) >= 3 and all(reads)
        assert [int(e.msg) for batch in reads for e in batch] == list(range(count))
        assert pipe.lost() == 0
    finally:
        pipe.close()


def test_one_read_stops_at_the_chunk_that_holds_its_limit(tmp_path: Path) -> None:
    line = "          python3-42      [001] d..31  5.000001: bpf_trace_printk: ft12345678 sh\t{}\n"
    text = "".join(line.format(n) for n in range(5_000))
    pipe = _file_pipe(tmp_path, text)
    try:
        first = pipe.read(10)  # the first 64 KiB chunk holds more than 10 lines
        assert os.lseek(pipe.fd, 0, os.SEEK_CUR) == 1 << 16 and pipe.more
        rest = pipe.read(len(text))
        assert not pipe.more
        assert [int(e.msg) for e in first + rest] == list(range(5_000))
    finally:
        pipe.close()


def test_lines_left_at_stop_are_counted_not_emitted(tmp_path: Path) -> None:
    line = "          python3-42      [001] d..31  5.000001: bpf_trace_printk: ft12345678 sh\t{}\n"
    other = "          python3-42      [001] d..31  5.000001: bpf_trace_printk: someone else\n"
    count = 40_000
    text = "".join(line.format(n) + (other if n % 2 else "") for n in range(count))
    pipe = _file_pipe(tmp_path, text)
    try:
        read = len(pipe.read(100))
        assert 0 < read < count
        assert pipe.unread() == count - read
        assert pipe.read(count) == [] and not pipe.pending()
    finally:
        pipe.close()
