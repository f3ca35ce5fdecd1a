"""The fleet path against real NATS servers: agents publishing to JetStream
with acknowledgements, a collector merging through a durable consumer, and
the failures the design must survive (a node killed, the whole cluster
stopped, the collector killed), each with exact accounting."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from fleet import (
    COLLECTOR,
    Agent,
    Process,
    buckets_of,
    cli_env,
    read_ndjson,
    unix_seconds,
    write_recording,
)
from natsserver import NATS_SERVER, NatsCluster

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not Path(NATS_SERVER).exists(), reason="needs nats-server (scripts/setup.sh --test)"
    ),
]

WALL = 1_800_000_000.0  # the recordings' wall-clock start: a multiple of every window


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    yield
    Process.end_all()


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[NatsCluster]:
    (tmp_path / "nats").mkdir()
    cluster = NatsCluster(tmp_path / "nats", 3)
    cluster.start()
    yield cluster
    cluster.close()


async def consumer_counts(urls: list[str], durable: str) -> tuple[int, int, int, int]:
    """A consumer's messages (not yet delivered, delivered but unacknowledged,
    redelivered and not yet acknowledged) and the last stream sequence delivered."""
    nc = await nats.connect(servers=urls)
    try:
        info = await nc.jetstream().consumer_info("FLOWTRACE", durable)
    finally:
        await nc.close()
    last = info.delivered.stream_seq if info.delivered is not None else 0
    return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0, last or 0


async def consumer_pending(urls: list[str], durable: str) -> tuple[int, int]:
    """(messages not yet delivered, delivered but unacknowledged) of a consumer."""
    return (await consumer_counts(urls, durable))[:2]


def until(what: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)  # poll interval of this bounded wait


def publishing(agents: list[Agent]) -> bool:
    """Every agent has written results of its own, and none has finished."""
    started = all(a.out.exists() and a.out.stat().st_size > 0 for a in agents)
    return started and all(a.process.poll() is None for a in agents)


def produced_since(agents: list[Agent], before: list[int], more: int) -> bool:
    """Every agent has produced ``more`` results since it had ``before``."""
    return all(a.produced() >= b + more for a, b in zip(agents, before, strict=True))


def interrupt(agents: list[Agent]) -> None:
    """Ctrl-C to every agent: the scenario has run its course (their
    recordings run longer, room for a loaded machine); each stops, sends
    what it holds and exits (:func:`check_agents` waits for that)."""
    for agent in agents:
        agent.process.send_signal(signal.SIGINT)


async def stream_last(urls: list[str]) -> int:
    """The last sequence the stream holds, as its leader knows it (every
    message an agent had acknowledged is in it)."""
    nc = await nats.connect(servers=urls)
    try:
        return (await nc.jetstream().stream_info("FLOWTRACE")).state.last_seq or 0
    finally:
        await nc.close()


def wait_consumed(urls: list[str], durable: str, within: float = 60) -> None:
    """Wait until the consumer has been delivered the stream's last message.
    A consumer's own count of pending messages alone is not enough: a
    consumer just created, or led from a replica still catching up, can
    report 0 pending before it knows of the last messages."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            pending, _, _, delivered = asyncio.run(consumer_counts(urls, durable))
            if pending == 0 and delivered == asyncio.run(stream_last(urls)):
                return
        except Exception:  # a leader is being elected: ask again
            pass
        time.sleep(0.2)  # poll interval of this bounded wait
    raise AssertionError("the collector never read everything")


def agent_totals(agents: list[Agent]) -> Counter[tuple[int, int]]:
    total: Counter[tuple[int, int]] = Counter()
    for agent in agents:
        total += buckets_of(read_ndjson(agent.out))
    return total


def check_agents(agents: list[Agent]) -> list[tuple[int, int, dict[str, int]]]:
    """Each agent exited cleanly and received = acknowledged + dropped, exactly."""
    results = []
    for agent in agents:
        assert agent.wait(90) == 0, agent.stderr()
        received, acked, dropped = agent.accounting()
        assert received == agent.produced()
        assert received == acked + sum(dropped.values()), agent.stderr()
        results.append((received, acked, dropped))
    return results


def start_agents(
    tmp: Path,
    servers: list[str],
    *,
    seconds: float,
    window: float,
    realtime: bool,
    close_timeout: float = 10.0,
) -> list[Agent]:
    env = cli_env(tmp)
    agents = []
    for h in range(4):
        rec = tmp / f"host{h}.rec"
        write_recording(rec, h, seconds, 400, wall_start=WALL)
        agents.append(
            Agent(tmp, f"host{h}", rec, servers, env, window=window, realtime=realtime,
                  extra=f",replicas=3,close_timeout={close_timeout}",
                  drain_timeout=close_timeout)
        )  # fmt: skip
    return agents


def collector(
    tmp: Path, servers: list[str], name: str, *, window: float, lateness: float = 2.0
) -> Process:
    out = tmp / f"{name}.ndjson"
    args = [COLLECTOR, *servers, "--window", str(window), "--out", str(out)]
    args += ["--ack-wait", "2", "--durable", "fleet", "--lateness", str(lateness)]
    return Process(args, cli_env(tmp), tmp / f"{name}.err")


def stop_collector(c: Process, servers: list[str]) -> None:
    wait_consumed(servers, "fleet")
    assert c.interrupt() == 0, c.stderr()
    assert "dropped" not in c.stderr(), c.stderr()  # no duplicate, no late result
    # everything it read is acknowledged: nothing left for a successor
    assert asyncio.run(consumer_pending(servers, "fleet")) == (0, 0)


def test_four_agents_merge_to_the_sum_bucket_for_bucket(
    three_nodes: NatsCluster, tmp_path: Path
) -> None:
    servers = three_nodes.urls
    agents = start_agents(tmp_path, servers, seconds=6.0, window=1.0, realtime=False)
    check_agents(agents)
    c = collector(tmp_path, servers, "collector", window=1.0)
    stop_collector(c, servers)
    merged = read_ndjson(tmp_path / "collector.ndjson")
    hists = [m["data"] for m in merged if m["type"] == "histogram"]
    # per fleet window: the merged buckets are the four agents' buckets added
    for h in hists:
        expected: Counter[tuple[int, int]] = Counter()
        for agent in agents:
            for record in read_ndjson(agent.out):
                mid = WALL + (record["data"]["window_start"] + record["data"]["window_end"]) / 2
                if unix_seconds(h["wall_start"]) <= mid - 1000.0 < unix_seconds(h["wall_end"]):
                    expected += buckets_of([record])
        assert {(b["low"], b["high"]): b["count"] for b in h["buckets"] if b["count"]} == expected
        assert h["hosts"] == ["host0", "host1", "host2", "host3"]
    assert [unix_seconds(h["wall_start"]) for h in hists] == [WALL + i for i in range(7)]
    assert buckets_of(merged) == agent_totals(agents)
    worst = [m["data"]["value"] for m in merged if m["type"] == "window"]
    assert [w["host"] for w in worst[0]] == ["host3", "host2", "host1"]


def test_node_killed_mid_stream_and_restarted(three_nodes: NatsCluster, tmp_path: Path) -> None:
    servers = three_nodes.urls
    # results held up by the outage and the stream's new leader arrive late by
    # more than the 2.5 s the node is down: the collector waits for them
    c = collector(tmp_path, servers, "collector", window=0.5, lateness=8.0)
    agents = start_agents(tmp_path, servers, seconds=20.0, window=0.25, realtime=True)
    until(lambda: publishing(agents))
    time.sleep(1.0)  # the scenario: a second of streaming, then the kill
    three_nodes.servers[0].kill()
    time.sleep(2.5)  # the scenario: the node stays down 2.5 s
    three_nodes.servers[0].start()
    # the scenario's end: a second more of results from every agent
    back = [a.produced() for a in agents]
    until(lambda: produced_since(agents, back, 4))
    interrupt(agents)
    results = check_agents(agents)
    assert all(dropped == {} for _, _, dropped in results), results
    stop_collector(c, servers)
    merged = read_ndjson(tmp_path / "collector.ndjson")
    assert buckets_of(merged) == agent_totals(agents)


def test_whole_cluster_stopped_for_5_s(three_nodes: NatsCluster, tmp_path: Path) -> None:
    servers = three_nodes.urls
    # a whole cluster restarted may take its streams' leaders more than the
    # default 10 s to elect: the agents wait up to 60 s for their acknowledgements
    agents = start_agents(
        tmp_path, servers, seconds=25.0, window=0.25, realtime=True, close_timeout=60.0
    )
    until(lambda: publishing(agents))
    time.sleep(1.0)  # the scenario: a second of streaming, then the outage
    for server in three_nodes.servers:
        server.stop()
    time.sleep(5.0)  # the scenario: the whole cluster is down 5 s
    for server in three_nodes.servers:
        server.start()
    # the scenario's end: a second more of results from every agent
    back = [a.produced() for a in agents]
    until(lambda: produced_since(agents, back, 4))
    interrupt(agents)
    results = check_agents(agents)
    assert all(dropped == {} for _, _, dropped in results), results
    c = collector(tmp_path, servers, "collector", window=0.5)
    stop_collector(c, servers)
    merged = read_ndjson(tmp_path / "collector.ndjson")
    assert buckets_of(merged) == agent_totals(agents)


def test_collector_killed_resumes_from_its_durable_consumer(
    three_nodes: NatsCluster, tmp_path: Path
) -> None:
    servers = three_nodes.urls
    first = collector(tmp_path, servers, "first", window=0.5)
    # 30 s of results, interrupted once the scenario has run its course: on
    # a loaded machine the first merged windows took more than 8 s to appear
    agents = start_agents(tmp_path, servers, seconds=30.0, window=0.25, realtime=True)
    until(lambda: bool(read_ndjson(tmp_path / "first.ndjson")))  # it has merged windows
    time.sleep(1.0)  # the scenario: a second more of merging, then the kill
    assert all(a.process.poll() is None for a in agents)  # mid-stream
    first.kill()
    emitted_before_kill = read_ndjson(tmp_path / "first.ndjson")
    _, unacknowledged, _, last_read = asyncio.run(consumer_counts(servers, "fleet"))
    assert unacknowledged, "the first had nothing unacknowledged to hand on"
    # what the first read unacknowledged comes again only after the 2 s ack
    # wait, behind results published since: the successor waits for it
    second = collector(tmp_path, servers, "second", window=0.5, lateness=8.0)

    def handed_on() -> bool:
        """The successor has had again all the first left unacknowledged
        (each counted redelivered until acknowledged: the successor holds
        them for its windows' lateness), and results published since."""
        try:
            _, _, redelivered, last = asyncio.run(consumer_counts(servers, "fleet"))
        except Exception:  # a leader is being elected: ask again
            return False
        return redelivered >= unacknowledged and last > last_read

    until(handed_on)
    interrupt(agents)
    check_agents(agents)
    stop_collector(second, servers)
    again = read_ndjson(tmp_path / "second.ndjson")
    # a window the first wrote but had not acknowledged yet when killed comes
    # again with exactly the same inputs (kept once); any other overlap
    # would count an input twice
    def window(m: dict[str, Any]) -> tuple[str, float]:
        return m["type"], m["data"]["wall_start"]

    written = {window(m): m["data"]["inputs"] for m in emitted_before_kill}
    repeated = [m for m in again if window(m) in written]
    assert all(written[window(m)] == m["data"]["inputs"] for m in repeated)
    merged = emitted_before_kill + [m for m in again if m not in repeated]
    assert buckets_of(merged) == agent_totals(agents)
