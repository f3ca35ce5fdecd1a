"""Operators in the kernel give exactly what they give in Python.

Each test runs one pipeline twice at the same time, once with its
operators placed in the BPF program and once with ``pushdown=False``,
against one deterministic workload (a C program writing seeded sizes, a
getppid loop), and compares the records, and both against what the
workload did.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import pytest
from workloads import busy_getppid, dd, lcg_sizes, loop_device, sized_writes

from flowtrace import (
    Operator,
    Pipeline,
    PipelineStats,
    Source,
    syscall_entry,
    syscall_exit,
    tracepoints,
)
from flowtrace.operators import (
    Count,
    F,
    Max,
    Min,
    Rate,
    Sum,
    Tumbling,
    count,
    filter,
    join,
    linear_histogram,
    log2_histogram,
    log2_index,
    running_count,
    window,
)
from flowtrace.records import CountTable, Histogram, JoinPair, WindowResult
from flowtrace.sources.block import BlockComplete, BlockIssue
from flowtrace.testing import CollectSink

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]

WRITES = 400
MOST = 70_000
FD = 3  # sized_writes opens /dev/null first


async def both(
    source: Source[Any],
    operators: Sequence[Operator[Any, Any]],
    workload: Callable[[], Any],
) -> tuple[list[Any], list[Any], PipelineStats, PipelineStats]:
    """What ``source | operators`` emits with the operators in the kernel and
    in Python, run at the same time over ``workload``; and both runs' stats."""
    pushed = Pipeline(source, operators, CollectSink[Any]())
    plain = Pipeline(source, operators, CollectSink[Any](), pushdown=False)
    assert pushed.placement().in_kernel == len(operators), pushed.describe()
    async with anyio.create_task_group() as tg:
        runs = [await tg.start(p.run) for p in (pushed, plain)]
        await anyio.to_thread.run_sync(workload)
        for run in runs:
            run.stop()
    for run in runs:
        assert run.stats.lost == 0, run.stats.summary()
        for before, after in itertools.pairwise(run.stats.stages):
            assert after.received == before.emitted, run.stats.summary()
    items = [run.sink.items for run in runs]
    return items[0], items[1], runs[0].stats, runs[1].stats


def writes_of(pid: int) -> Operator[Any, Any]:
    return filter((F.pid == pid) & (F.fd == FD))


def without_windows(records: list[Any]) -> list[Any]:
    """Records with their window bounds, monotonic and wall-clock, cleared
    (two runs start apart)."""
    import msgspec

    cleared = {"window_start": None, "window_end": None, "wall_start": None, "wall_end": None}
    return [msgspec.structs.replace(r, **cleared) for r in records]


async def test_a_filter_passes_exactly_the_events_python_passes() -> None:
    workload = sized_writes(7, WRITES, MOST)
    keep = (F.pid == workload.pid) & (F.fd == FD) & ((F.count < 2000) | (F.count >= 60_000))
    pushed, plain, stats, _ = await both(syscall_entry("write"), [filter(keep)], workload.go)
    sizes = lcg_sizes(7, WRITES, MOST)
    expected = [n for n in sizes if n < 2000 or n >= 60_000]
    assert [e.count for e in pushed] == expected
    assert [(e.pid, e.fd, e.count, e.comm) for e in pushed] == [
        (e.pid, e.fd, e.count, e.comm) for e in plain
    ]
    kernel_filter = stats.stages[1]
    assert kernel_filter.emitted == len(expected)
    assert kernel_filter.received >= WRITES  # every write on the machine was tested


async def test_counts_by_fields_with_top_n_match_python() -> None:
    workload = sized_writes(11, WRITES, 8)  # sizes 1..8: ties broken by first appearance
    ops = [writes_of(workload.pid), count(["comm", "count"], top=5)]
    pushed, plain, _, _ = await both(syscall_entry("write"), ops, workload.go)
    assert without_windows(pushed) == without_windows(plain)
    (table,) = pushed
    assert isinstance(table, CountTable)
    by_size = Counter(lcg_sizes(11, WRITES, 8))
    assert {r.key["count"]: r.count for r in table.rows} == dict(by_size.most_common(5))
    assert table.others == WRITES - sum(r.count for r in table.rows)


async def test_log2_and_linear_histograms_match_python_and_the_sizes() -> None:
    workload = sized_writes(3, WRITES, MOST)
    source = syscall_entry("write")
    log2 = [writes_of(workload.pid), log2_histogram("count", unit="kbytes", divisor=1024)]
    linear = [writes_of(workload.pid), linear_histogram("count", divisor=2048, max_index=20)]
    sizes = lcg_sizes(3, WRITES, MOST)
    # the four runs see one workload: each kind in the kernel and in Python
    async with anyio.create_task_group() as tg:
        pipelines = {
            (name, pushdown): Pipeline(source, ops, CollectSink[Any](), pushdown=pushdown)
            for name, ops in (("log2", log2), ("linear", linear))
            for pushdown in (True, False)
        }
        runs = {key: await tg.start(p.run) for key, p in pipelines.items()}
        await anyio.to_thread.run_sync(workload.go)
        for r in runs.values():
            r.stop()
    out = {key: r.sink.items for key, r in runs.items()}
    for name in ("log2", "linear"):
        assert without_windows(out[name, True]) == without_windows(out[name, False]), name
    (hist,) = out["log2", True]
    assert isinstance(hist, Histogram)
    slots = Counter(log2_index(n // 1024) for n in sizes)
    assert {b.high.bit_length() or 1: b.count for b in hist.buckets if b.count} == dict(slots)
    assert hist.sum == sum(sizes) / 1024  # the values' sum, kept in the kernel too
    (lin,) = out["linear", True]
    assert {b.low: b.count for b in lin.buckets if b.count} == dict(
        Counter(n // 2048 for n in sizes if n // 2048 <= 20)
    )
    kernel_linear = runs["linear", True].stats.stages[2]
    assert kernel_linear.dropped == {"out_of_range": sum(1 for n in sizes if n // 2048 > 20)}
    assert runs["linear", False].stats.stages[2].dropped == kernel_linear.dropped


async def test_histograms_by_key_and_scalar_aggregates_match_python() -> None:
    workload = sized_writes(5, WRITES, MOST)
    ops: list[Operator[Any, Any]] = [
        filter(F.pid == workload.pid),
        log2_histogram("count", by="fd", divisor=100),
    ]
    pushed, plain, _, _ = await both(syscall_entry("write"), ops, workload.go)
    assert without_windows(pushed) == without_windows(plain)
    assert [h.key for h in pushed] == [{"fd": FD}, {"fd": 1}]  # first appearance: /dev/null first
    assert pushed[0].sum == sum(lcg_sizes(5, WRITES, MOST)) / 100
    sizes = lcg_sizes(5, WRITES, MOST)
    for aggregate, expected in (
        (Sum("count"), sum(sizes)),
        (Min("count"), min(sizes)),
        (Max("count"), max(sizes)),
        (Count(), WRITES),
    ):
        workload = sized_writes(5, WRITES, MOST)
        ops = [writes_of(workload.pid), window(aggregate)]
        pushed, plain, _, _ = await both(syscall_entry("write"), ops, workload.go)
        assert without_windows(pushed) == without_windows(plain)
        (result,) = pushed
        assert isinstance(result, WindowResult)
        assert result.value == expected, aggregate.name


async def test_a_full_map_drops_exactly_what_python_drops_at_its_key_limit() -> None:
    workload = sized_writes(9, WRITES, MOST)
    ops = [writes_of(workload.pid), count("count", max_keys=25)]
    pushed, plain, kernel, user = await both(syscall_entry("write"), ops, workload.go)
    assert without_windows(pushed) == without_windows(plain)
    assert kernel.stages[2].dropped == user.stages[2].dropped
    sizes = lcg_sizes(9, WRITES, MOST)
    kept = list(dict.fromkeys(sizes))[:25]
    assert kernel.stages[2].dropped == {"key_limit": sum(1 for n in sizes if n not in kept)}
    (table,) = pushed
    assert sorted(r.key["count"] for r in table.rows) == sorted(kept)


async def test_interval_windows_count_every_event_exactly_once_under_load() -> None:
    """A workload that never pauses across 20 window boundaries: the windows
    the kernel closed add up to exactly the calls the workload made."""
    interval = 0.1
    workload = busy_getppid(22 * interval)
    source = syscall_entry("getppid")
    ops = [filter(F.pid == workload.pid), window(Count(), every=Tumbling(interval))]
    pipeline = Pipeline(source, ops, CollectSink[Any]())
    assert pipeline.placement().in_kernel == 2
    calls: list[int] = []
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        calls.append(int(await anyio.to_thread.run_sync(workload.go)))
        run.stop()
    windows = run.sink.items
    assert run.stats.lost == 0 and run.stats.dropped == 0, run.stats.summary()
    assert sum(w.value for w in windows) == calls[0]
    busy = [w for w in windows if w.value]
    assert len(busy) >= 20, [w.value for w in windows]
    # the windows in the middle of the workload each saw calls: it never paused
    assert all(w.value > 0 for w in busy[1:-1])
    ends = [w.window_end for w in windows]
    assert ends == sorted(ends)
    assert all(abs(b.window_start - a.window_end) < 1e-9 for a, b in itertools.pairwise(windows))


async def test_rate_per_window_is_the_count_over_the_window() -> None:
    workload = busy_getppid(0.6)
    ops = [filter(F.pid == workload.pid), window(Rate(), every=Tumbling(0.2))]
    pipeline = Pipeline(syscall_entry("getppid"), ops, CollectSink[Any]())
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        calls = int(await anyio.to_thread.run_sync(workload.go))
        run.stop()
    rates = run.sink.items
    total = sum(r.value * (r.window_end - r.window_start) for r in rates if r.value)
    assert round(total) == calls


# -- joins -----------------------------------------------------------------------

BLOCK = (("block:block_rq_issue", BlockIssue), ("block:block_rq_complete", BlockComplete))


async def loop_device_runs(
    operators: Callable[[int], list[Operator[Any, Any]]],
) -> tuple[list[Any], list[Any], PipelineStats, PipelineStats]:
    """``operators(dev)`` after both block tracepoints, in the kernel and in
    Python at once, while dd writes directly to a fresh loop device."""
    with loop_device() as (device, dev):

        def write() -> None:
            dd("if=/dev/zero", f"of={device}", "bs=128k", "count=8", "oflag=direct")

        return await both(tracepoints(*BLOCK), operators(dev), write)


async def test_a_join_in_the_kernel_pairs_what_python_pairs() -> None:
    def ops(dev: int) -> list[Operator[Any, Any]]:
        return [
            filter(F.dev == dev),
            join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False),
        ]

    pushed, plain, stats, _ = await loop_device_runs(ops)
    assert len(pushed) == 8
    assert all(isinstance(p, JoinPair) for p in pushed)
    # each program stamps its own records (ts), so the runs agree on all but times
    assert [untimed(p) for p in pushed] == [untimed(p) for p in plain]
    assert all(p.start.bytes == 128 << 10 and p.latency_ns > 0 for p in pushed)
    assert [p.latency_ns for p in pushed] == [p.complete.ts - p.start.ts for p in pushed]
    assert stats.stages[2].dropped == {}


def untimed(pair: JoinPair[Any, Any]) -> tuple[Any, ...]:
    import msgspec

    return (
        pair.key,
        msgspec.structs.replace(pair.start, ts=0),
        msgspec.structs.replace(pair.complete, ts=0),
    )


async def test_only_buckets_leave_the_kernel_when_a_histogram_follows_a_join() -> None:
    def ops(dev: int) -> list[Operator[Any, Any]]:
        return [
            filter(F.dev == dev),
            join(BlockIssue, BlockComplete, key=["dev", "sector"], emit_incomplete=False),
            log2_histogram("latency_ns", unit="usecs", divisor=1000),
        ]

    pushed, plain, stats, _ = await loop_device_runs(ops)
    (hist,), (python,) = pushed, plain
    assert isinstance(hist, Histogram) and hist.total == python.total == 8
    # latencies measured by two programs a few microseconds apart: the same
    # bucket, or the next one
    assert abs(_mean_slot(hist) - _mean_slot(python)) <= 1
    join_stage, hist_stage = stats.stages[2], stats.stages[3]
    assert (join_stage.received, join_stage.emitted, hist_stage.received) == (16, 8, 8)
    assert hist_stage.emitted == 1  # the histogram: nothing else crossed


def _mean_slot(hist: Histogram) -> float:
    return sum(b.high.bit_length() * b.count for b in hist.buckets) / hist.total


async def test_syscall_entry_and_exit_join_by_thread_in_the_kernel() -> None:
    workload = sized_writes(13, 50, 100)
    source = tracepoints("syscalls:sys_enter_write", "syscalls:sys_exit_write")
    enter, exit_ = source.event_types()
    ops = [
        filter(F.pid == workload.pid),
        join(enter, exit_, key="tid", emit_incomplete=False),
        window(Sum("latency_ns")),
    ]
    pushed, plain, kernel, user = await both(source, ops, workload.go)
    (total,), (python,) = pushed, plain
    assert total.value > 0 and python.value > 0
    # 50 writes and the line it prints at the end: each entry paired with its exit
    for stats in (kernel, user):
        assert (stats.stages[2].received, stats.stages[2].emitted) == (102, 51)
        assert stats.stages[2].dropped == {}


async def test_signed_values_sum_min_and_max_per_key_as_in_python() -> None:
    """read(2) returns: sizes, and -EBADF (-9) for a descriptor that is not open."""
    from workloads import Gated

    returns = [5, -9, 100, -9, 1, 4096, -9]
    body = "fd = os.open('/dev/zero', os.O_RDONLY)\n" + "".join(
        "try:\n    os.read(999, 1)\nexcept OSError:\n    pass\n"
        if n < 0
        else f"os.read(fd, {n})\n"
        for n in returns
    )
    source = syscall_exit("read")
    for aggregate in (Sum("ret"), Min("ret"), Max("ret")):
        workload = Gated(body)
        ops = [
            filter(F.pid == workload.pid),
            window(aggregate, by="comm"),
        ]
        pushed, plain, _, _ = await both(source, ops, workload.go)
        assert without_windows(pushed) == without_windows(plain)
        (result,) = pushed
        assert result.key == {"comm": "python3"}
        # besides these, the process reads its go line from stdin
        expected = {"sum": sum(returns) + 3, "min": -9, "max": 4096}[aggregate.name]
        assert result.value == expected


def running(records: list[Any]) -> list[tuple[int, int, int]]:
    """Each write's size, running number and gap."""
    return [(e.count, e.seq, e.gap) for e in records]


async def test_a_running_count_and_gap_per_key_match_python_and_the_sizes() -> None:
    """The gap of the size field: every write's number and the difference
    from the previous size are known; a filter after keeps the shrinking
    writes, in the kernel too."""
    workload = sized_writes(17, WRITES, MOST)
    ops = [writes_of(workload.pid), running_count("fd", time="count"), filter(F.gap < 0)]
    pushed, plain, kernel, _ = await both(syscall_entry("write"), ops, workload.go)
    sizes = lcg_sizes(17, WRITES, MOST)
    expected = [
        (now, i + 1, now - before)
        for i, (before, now) in enumerate(itertools.pairwise(sizes), start=1)
        if now < before
    ]
    assert running(pushed) == running(plain) == expected
    assert type(pushed[0]) is type(plain[0])  # one event type, with the fields added
    assert (kernel.stages[2].received, kernel.stages[2].emitted) == (WRITES, WRITES)
    assert kernel.stages[3].emitted == len(expected)


async def test_a_running_count_drops_keys_beyond_its_map_as_python_does() -> None:
    workload = sized_writes(19, WRITES, 40)
    ops = [writes_of(workload.pid), running_count("count", max_keys=25)]
    pushed, plain, kernel, user = await both(syscall_entry("write"), ops, workload.go)
    sizes = lcg_sizes(19, WRITES, 40)
    kept = list(dict.fromkeys(sizes))[:25]
    seen: Counter[int] = Counter()
    expected = []
    for n in sizes:
        if n in kept:
            seen[n] += 1
            expected.append((n, seen[n]))
    assert [(e.count, e.seq) for e in pushed] == [(e.count, e.seq) for e in plain] == expected
    assert all((e.gap == 0) == (e.seq == 1) for e in pushed)  # gaps of ts: the runs differ
    assert kernel.stages[2].dropped == user.stages[2].dropped
    assert kernel.stages[2].dropped == {"key_limit": len(sizes) - len(expected)} != {}


async def test_metrics_export_the_sum_and_count_of_a_histogram_made_in_the_kernel() -> None:
    from typing import cast

    from test_sink_metrics import samples, scrape

    from flowtrace.sinks.metrics import MetricsSink

    workload = sized_writes(23, WRITES, MOST)
    hist = log2_histogram("count", unit="kbytes", divisor=1024, every=Tumbling(0.2))
    ops = [writes_of(workload.pid), hist]
    pipeline = Pipeline(syscall_entry("write"), ops, MetricsSink(port=0))
    assert pipeline.placement().in_kernel == 2
    async with anyio.create_task_group() as tg:
        run = await tg.start(pipeline.run)
        await anyio.to_thread.run_sync(workload.go)
        url = cast(MetricsSink, run.sink).url
        with anyio.fail_after(10):
            while True:
                families = await anyio.to_thread.run_sync(scrape, url)
                family = families.get("flowtrace_count_bytes")  # after the first window
                if family and samples(family, "_count") == {(("pipeline", ""),): WRITES}:
                    break
                await anyio.sleep(0.1)  # poll interval of this bounded wait
        run.stop()
    sizes = lcg_sizes(23, WRITES, MOST)
    assert samples(family, "_sum") == {(("pipeline", ""),): sum(sizes)}  # kbytes back to bytes


async def test_an_aggregate_after_a_running_count_reads_its_fields_in_the_kernel() -> None:
    workload = sized_writes(29, WRITES, MOST)
    ops = [writes_of(workload.pid), running_count(time="count"), window(Sum("gap"), by="fd")]
    pushed, plain, kernel, _ = await both(syscall_entry("write"), ops, workload.go)
    assert without_windows(pushed) == without_windows(plain)
    (total,) = pushed
    sizes = lcg_sizes(29, WRITES, MOST)
    assert total.value == sizes[-1] - sizes[0]  # the gaps add up to the last size less the first
    assert kernel.stages[3].received == WRITES
