"""bcc's best-known tools as pipelines (pipelines/tools/), each against a
workload whose events are known exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from kernelrun import bpf_program, collect, through
from netns import VethPair, first_copies_dropped, veth_pair
from test_kernel_lessons import direct_writes
from test_net_lessons import CONNECTIONS, Exchange
from workloads import Gated, Spinner, loop_device

from flowtrace import Pipeline
from flowtrace.loader import load_pipeline
from flowtrace.records import CountTable, Histogram
from flowtrace.stack_counts import StackCount
from flowtrace.testing import CollectSink

pytestmark = [pytest.mark.kernel, pytest.mark.anyio]


def tool(name: str, *args: str) -> Pipeline:
    return load_pipeline(f"pipelines/tools/{name}", list(args))


def line(pipeline: Pipeline, item: Any) -> str:
    return str(pipeline.sink.line(item))  # type: ignore[attr-defined]




# -- execsnoop ---------------------------------------------------------------------

EXECS = """
import subprocess
subprocess.run(["/bin/echo", "one", "two words"], stdout=subprocess.DEVNULL)
subprocess.run(["/bin/true", *map(str, range(12))])
try:
    subprocess.run(["/nonexistent/flowtrace-test"])
except FileNotFoundError:
    pass
"""


@pytest.mark.parametrize("fails", [False, True])
async def test_execsnoop_shows_each_exec_with_its_parent_and_arguments(fails: bool) -> None:
    pipeline = tool("execsnoop.py", *(["-x"] if fails else []))
    parent = Gated(EXECS)
    events = await collect(pipeline.source, parent.go)
    ours = [e for e in await through(events, pipeline.operators) if e.ppid == parent.pid]
    expected = [
        ("echo", 0, "/bin/echo one two words"),
        ("true", 0, "/bin/true 0 1 2 3 4 5 6 ..."),  # 8 arguments kept
    ]
    if fails:
        expected.append(("python3", -2, "/nonexistent/flowtrace-test"))  # ENOENT
    assert [(e.comm, e.ret, e.args) for e in ours] == expected
    assert line(pipeline, ours[0]) == (
        f"echo             {ours[0].pid:<7} {parent.pid:<7}   0 /bin/echo one two words"
    )


# -- opensnoop -------------------------------------------------------------------


@pytest.mark.parametrize("failed", [False, True])
async def test_opensnoop_pairs_each_open_with_its_result(tmp_path: Path, failed: bool) -> None:
    present, missing = tmp_path / "present", tmp_path / "missing"
    present.write_text("x")
    opener = Gated(
        f"for _ in range(3):\n    os.close(os.open({str(present)!r}, os.O_RDONLY))\n"
        f"for _ in range(2):\n"
        f"    try:\n        os.open({str(missing)!r}, os.O_RDONLY)\n"
        f"    except FileNotFoundError:\n        pass\n"
    )
    pipeline = tool("opensnoop.py", "-p", str(opener.pid), *(["-x"] if failed else []))
    events = await collect(pipeline.source, opener.go)
    # the opener has one thread: its entries and exits carry its pid as tid
    opens = await through([e for e in events if e.tid == opener.pid], pipeline.operators)
    ours = [(p.start.filename, p.complete.ret) for p in opens]
    expected = [(str(missing), -2)] * 2
    if not failed:
        fds = [ret for _, ret in ours[:3]]
        assert all(fd >= 0 for fd in fds)
        expected = [(str(present), fd) for fd in fds] + expected
    assert ours == expected
    assert {p.start.pid for p in opens} == {opener.pid}
    assert line(pipeline, opens[-1]) == f"{opener.pid:<6} python3            -1   2 {missing}"


# -- biolatency -------------------------------------------------------------------


async def test_biolatency_per_disk_puts_each_write_in_the_loop_device_histogram() -> None:
    pipeline = tool("biolatency.py", "-D")
    with loop_device() as (device, dev):
        events = await collect(pipeline.source, direct_writes(device))
    ours = [e for e in events if e.dev == dev]
    hists = [h for h in await through(ours, pipeline.operators) if isinstance(h, Histogram)]
    (hist,) = hists
    assert hist.unit == "usecs" and hist.key == {"device": dev}
    assert hist.total == 4  # the four direct writes, each issued and completed
    style = pipeline.sink.histogram  # type: ignore[attr-defined]
    assert style.lines(hist)[:2] == ["", f"disk = {os.path.basename(device)}"]


def test_biolatency_milliseconds_and_intervals_are_what_was_asked() -> None:
    operators = tool("biolatency.py", "-m", "2", "3").operators
    histogram = operators[-1]
    assert histogram.limit == 3  # type: ignore[attr-defined]
    assert histogram.aggregate.unit == "msecs"  # type: ignore[attr-defined]


# -- runqlat --------------------------------------------------------------------------

SLEEPS = 20

# counts the wake-ups of thread TID that reach BPF programs
WAKEUPS = """
BPF_ARRAY(wakeups, u64, 1);
TRACEPOINT_PROBE(sched, sched_wakeup) {
    int zero = 0;
    if (args->pid == TID)
        wakeups.increment(zero);
    return 0;
}
"""


async def test_runqlat_holds_each_wait_of_one_thread() -> None:
    # the workload sleeps: what is measured, not a wait
    sleeper = Gated(f"import time\nfor _ in range({SLEEPS}):\n    time.sleep(0.01)\n")
    pipeline = tool("runqlat.py", "-p", str(sleeper.pid))
    sink = CollectSink[Any]()
    with bpf_program(WAKEUPS.replace("TID", str(sleeper.pid))) as counter:
        async with anyio.create_task_group() as tg:
            run = await tg.start(Pipeline(pipeline.source, [], sink).run)
            await anyio.to_thread.run_sync(sleeper.go)
            run.stop()
        delivered = counter[b"wakeups"][0].value
    events = sink.items
    ours = [e for e in events if e.tid == sleeper.pid]
    woken = sum(e.woken for e in ours)
    # woken once by the go line, then once after each sleep (preemptions add
    # waits that are not wake-ups). Now and then (in CI too) the kernel hands
    # one wake-up to no BPF program at all: the independent counter sees what
    # reached BPF. runqlat holds each of those, but for a probe run the
    # kernel skipped (another BPF program running on the CPU, any thread's):
    # each is counted as lost, so it can only explain that many missing
    lost = run.stats.lost
    assert delivered - lost <= woken <= delivered, (delivered, lost, ours)
    assert SLEEPS <= delivered <= SLEEPS + 1
    assert run.stats.dropped == 0, run.stats.summary()
    (hist,) = await through(events, pipeline.operators)
    assert isinstance(hist, Histogram) and hist.unit == "usecs"
    assert hist.total == len(ours)


# -- tcplife and tcpretrans ------------------------------------------------------------


@pytest.fixture
def pair() -> Any:
    with veth_pair() as made:
        yield made


async def test_tcplife_with_a_local_port_shows_the_server_side_only(pair: VethPair) -> None:
    port = random.randrange(20000, 30000)
    server = pair.peer(pair.server, "server", pair.server4, port, CONNECTIONS, 2048)
    client = pair.peer(pair.client, "client", pair.server4, port, CONNECTIONS, 1024)
    pipeline = tool("tcplife.py", "-L", str(port))
    events = await collect(pipeline.source, Exchange(server, client))
    rows = await through(events, pipeline.operators)
    assert [(r.pid, r.lport, r.tx_bytes, r.rx_bytes) for r in rows] == [
        (server.pid, port, 2048, 1024)
    ] * CONNECTIONS
    assert line(pipeline, rows[0]).startswith(f"{server.pid:<5} server     10.200.0.2      ")


async def test_tcpretrans_counts_retransmits_per_connection(pair: VethPair) -> None:
    port = random.randrange(20000, 30000)
    server = pair.peer(pair.server, "echo-server", pair.server4, port)
    client = pair.peer(pair.client, "messages", pair.server4, port, 2, 100)
    run = Exchange(server, client)
    pipeline = tool("tcpretrans.py", "-c")
    with first_copies_dropped(pair, port) as wire:
        events = await collect(pipeline.source, run)
        seen = wire()
    resent = seen.syns_resent + seen.data_resent
    assert seen.syns_dropped == 1 and seen.data_dropped >= 1 and resent >= 2, seen
    lport = int(run.out[0])
    ours = [e for e in events if port in (e.lport, e.rport)]
    (table,) = await through(ours, pipeline.operators)
    assert isinstance(table, CountTable)
    (row,) = table.rows
    # exactly what the kernel handed to BPF (see the lesson's test)
    assert row.count == seen.syns_traced + seen.data_traced, (ours, seen)
    assert resent - 1 <= row.count <= resent, (ours, seen)
    text = pipeline.sink.table.line(row)  # type: ignore[attr-defined]
    assert text == f"{f'[10.200.0.1]#{lport}':<20} <-> {f'[10.200.0.2]#{port}':<20} {row.count:>10}"


# -- profile and offcputime -------------------------------------------------------------


async def test_profile_of_a_spinning_program_shows_its_spinning_stack() -> None:
    spinner = Spinner(1.5)
    pipeline = tool("profile.py", "-F", "99", "-p", str(spinner.pid), "-U")
    try:
        counts = await collect(pipeline.source, spinner.spin)
    finally:
        spinner.end()
    assert all(isinstance(c, StackCount) and c.kernel_stack == [] for c in counts)
    assert [c.count for c in counts] == sorted(c.count for c in counts)  # lowest first
    top = counts[-1]
    text = line(pipeline, top)
    block = text.splitlines()
    assert block[:2] == ["    spin_here", "    main"]
    assert block[-2:] == [f"    -                spin ({spinner.pid})", f"        {top.count}"]
    assert text.endswith("\n")  # an empty line after each stack
    assert pipeline.sink.header == [  # type: ignore[attr-defined]
        f"Sampling at 99 Hertz of PID {spinner.pid} by user stack... Hit Ctrl-C to end."
    ]


async def test_offcputime_puts_a_sleepers_time_under_nanosleep() -> None:
    sleeper = Gated("import time\nfor _ in range(4):\n    time.sleep(0.1)\n")  # what is measured
    pipeline = tool("offcputime.py", "-p", str(sleeper.pid), "-K")
    counts = await collect(pipeline.source, sleeper.go)
    asleep = [c for c in counts if any("nanosleep" in f for f in c.kernel_stack)]
    assert sum(c.count for c in asleep) >= 400_000  # microseconds
    assert all(c.pid == sleeper.pid and c.user_stack == [] for c in counts)
