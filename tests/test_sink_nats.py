"""The NATS sink against one real ``nats-server -js`` (tests/natsserver.py):
message ids and exact accounting, resends stored once, subjects, a missing
stream, unreachable servers. Fast, unlike the fleet's failure scenarios in
tests/test_fleet.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from fleet import Agent, Process, cli_env, unix_seconds, write_recording
from natsserver import NATS_SERVER, NatsCluster

from flowtrace.records import Bucket, Histogram
from flowtrace.runtime import Run
from flowtrace.sinks.nats import NatsSink
from flowtrace.stages import Pipeline
from flowtrace.testing import ListSource

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not Path(NATS_SERVER).exists(), reason="needs nats-server (scripts/setup.sh --test)"
    ),
]

WALL = 1_800_000_000.0  # the recordings' wall-clock start


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    yield
    Process.end_all()


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats", 1)
    (tmp_path / "nats").mkdir()
    cluster.start()
    yield cluster
    cluster.close()


def histograms(n: int) -> list[Histogram]:
    return [
        Histogram(
            field="lat_ns",
            unit="usecs",
            scale="log2",
            buckets=[Bucket(0, 1, i), Bucket(2, 3, 1)],
            window_start=float(i),
            window_end=float(i + 1),
        )
        for i in range(n)
    ]


async def stream_messages(url: str, subject: str) -> list[Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, durable="check")
        got: list[Any] = []
        while True:
            try:
                got += await sub.fetch(1000, timeout=0.5)
            except nats.errors.TimeoutError:
                return got
    finally:
        await nc.close()


async def test_sink_delivers_with_message_ids_and_exact_accounting(one_node: NatsCluster) -> None:
    url = one_node.urls[0] + "/flowtrace.web1.test"
    run = Run(Pipeline(ListSource(histograms(250), batch_size=40), [], NatsSink(url, host="web1")))
    stats = await run.run()
    sink = run.sink
    assert isinstance(sink, NatsSink)
    assert (stats.stage("nats").received, sink.delivered, stats.dropped) == (250, 250, 0)
    messages = await stream_messages(one_node.urls[0], "flowtrace.web1.test")
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert ids == [f"web1.{sink.run_id}.{i}" for i in range(1, 251)]
    first = msgspec_json(messages[3].data)
    assert first["type"] == "histogram" and first["data"]["hosts"] == ["web1"]
    # the replay clock maps window bounds onto wall-clock time
    data = first["data"]
    assert unix_seconds(data["wall_end"]) - unix_seconds(data["wall_start"]) == pytest.approx(1.0)


def msgspec_json(data: bytes) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = json.loads(data)
    return parsed


class SameRun(NatsSink):
    """A sink whose every run has the same run id: a second run resends the
    first one's message ids, as a resend after a lost acknowledgement does."""

    async def open(self, ctx: Any) -> None:
        await super().open(ctx)
        self.run_id = "same"


async def test_resent_message_ids_are_stored_once(one_node: NatsCluster) -> None:
    url = one_node.urls[0] + "/flowtrace.web1.test"
    for resend in (False, True):
        run = Run(Pipeline(ListSource(histograms(100)), [], SameRun(url, host="web1")))
        await run.run()
        sink = run.sink
        assert isinstance(sink, SameRun)
        assert (sink.delivered, sink.duplicates) == (100, 100 if resend else 0)
    messages = await stream_messages(one_node.urls[0], "flowtrace.web1.test")
    assert len(messages) == 100


async def test_default_subject_names_host_and_pipeline(one_node: NatsCluster) -> None:
    sink = NatsSink(one_node.urls[0], host="db.2")
    await Pipeline(ListSource(histograms(3), name="disk"), [], sink).run()
    messages = await stream_messages(one_node.urls[0], "flowtrace.>")
    assert {m.subject for m in messages} == {"flowtrace.db_2.disk"}


def test_missing_stream_refused_in_one_line(one_node: NatsCluster, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    rec = tmp_path / "a.rec"
    write_recording(rec, 0, 0.5, 100, wall_start=WALL)
    agent = Agent(tmp_path, "a", rec, one_node.urls, env, window=1.0, realtime=False,
                  extra=",create=no")  # fmt: skip
    assert agent.wait() == 1
    error = [line for line in agent.stderr().splitlines() if "error" in line]
    assert error == [
        "flowtrace: error: stage 'sinks' failed: SinkFailed: sink 'nats' failed:"
        " StreamMissing: no JetStream stream captures"
        f" subject 'flowtrace.a.disk' on {one_node.urls[0]}; create one (nats stream add) or"
        " let the sink create it (drop create=no)"
    ]


async def test_unreachable_servers_buffer_then_drop_newest(tmp_path: Path) -> None:
    from natsserver import free_port

    url = f"nats://127.0.0.1:{free_port()}/flowtrace.h.p"
    sink = NatsSink(url, buffer=5, backoff=0.05, backoff_max=0.1, close_timeout=0.3)
    run = Run(Pipeline(ListSource(histograms(12), batch_size=4), [], sink))
    stats = await run.run()
    counts = stats.stage("nats")
    assert run.sink.delivered == 0  # type: ignore[attr-defined]
    assert counts.dropped == {"buffer_full": 7, "undelivered": 5}
    assert counts.received == run.sink.delivered + counts.dropped_total  # type: ignore[attr-defined]
