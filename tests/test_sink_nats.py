"""The NATS sink against one real ``nats-server -js`` (tests/natsserver.py):
message ids and exact accounting, resends stored once, subjects, a missing
stream, unreachable servers. Fast, unlike the fleet's failure scenarios in
tests/test_fleet.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import signal
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import msgspec
import nats
import pytest
from feeding import FeedSource, until_true
from fleet import Agent, Process, cli_env, unix_seconds, write_recording
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
from natsserver import NATS_SERVER, NatsCluster, NatsServer

from flowtrace.errors import StageError
from flowtrace.records import Bucket, Histogram, WindowResult
from flowtrace.runtime import Run
from flowtrace.schema import RecordEncoder
from flowtrace.sinks.nats import STREAM_LIMITS, NatsSink, NatsTarget, stream_config, subject_token
from flowtrace.sinkspec import SinkSpecError, sink_from_spec
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
        stored = (await sub.consumer_info()).num_pending or 0  # what the stream holds
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < stored:  # a fetch may time out under load: try again
            assert time.monotonic() < deadline, f"read {len(got)} of {stored} messages"
            with contextlib.suppress(asyncio.TimeoutError):  # nats-py raises its subclass or this
                got += await sub.fetch(min(1000, stored - len(got)), timeout=2)
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


# --- options and names, without a server ---------------------------------


def test_defaults_are_the_documented_ones() -> None:
    sink = NatsSink("nats://127.0.0.1:4222")
    assert (sink.servers, sink.subject, sink.stream, sink.create_stream) == (
        ("nats://127.0.0.1:4222",),
        None,
        "FLOWTRACE",
        True,
    )
    assert (sink.replicas, sink.framing, sink.buffer) == (1, "ndjson", 100_000)
    assert sink.max_inflight == 1000
    assert (sink.backoff, sink.backoff_max, sink.ack_timeout) == (0.1, 5.0, 2.0)
    assert (sink.connect_timeout, sink.close_timeout) == (2.0, 10.0)
    assert (sink.host, sink.pipeline, sink.name) == (socket.gethostname(), None, "nats")
    assert NatsSink.reported_changes == 10


def test_every_spec_option_reaches_the_sink() -> None:
    sink = sink_from_spec(
        "nats:nats://127.0.0.1:4222/flowtrace.a.b,tls://10.0.0.2:4443,stream=S,create=no,"
        "replicas=3,framing=msgpack,buffer=7,max_inflight=5,backoff=0.2,backoff_max=3,"
        "ack_timeout=4,close_timeout=6,host=h1,pipeline=p1"
    )
    assert isinstance(sink, NatsSink)
    assert vars(sink) == {
        "servers": ("nats://127.0.0.1:4222", "tls://10.0.0.2:4443"),
        "subject": "flowtrace.a.b",
        "stream": "S",
        "create_stream": False,
        "replicas": 3,
        "framing": "msgpack",
        "buffer": 7,
        "max_inflight": 5,
        "backoff": 0.2,
        "backoff_max": 3.0,
        "ack_timeout": 4.0,
        "connect_timeout": 2.0,
        "close_timeout": 6.0,
        "host": "h1",
        "pipeline": "p1",
        "name": "nats",
    }


@pytest.mark.parametrize(
    ("word", "meaning"),
    [("yes", True), ("True", True), ("1", True), ("no", False), ("FALSE", False), ("0", False)],
)
def test_create_takes_yes_or_no(word: str, meaning: bool) -> None:
    sink = sink_from_spec(f"nats:nats://127.0.0.1:4222,create={word}")
    assert isinstance(sink, NatsSink) and sink.create_stream is meaning


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "nats needs a server, e.g. --sink nats:nats://127.0.0.1:4222/flowtrace.web1.disk"),
        ("stream=S", "nats needs a server"),
        ("nats://h:1,create=maybe", "bad value for create: 'maybe': write yes or no"),
        ("nats://h:1,colour=red", "unknown option 'colour=red'; options: stream=..., create="),
        ("nats://h:1,backoff=0", "bad value for backoff: '0' is not a positive number"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SinkSpecError, match=f"^{re.escape(message)}"):
        NatsSink.from_spec(spec)


def test_server_urls_and_the_subject() -> None:
    parse = NatsTarget.parse
    both = NatsTarget(("nats://h1:1", "tls://h2:2"), "a.b")
    assert parse(["nats://h1:1/a.b", "tls://h2:2"]) == both
    assert parse(["nats://h1:1", "nats://u:p@h2:2/a.b/"]) == NatsTarget(
        ("nats://h1:1", "nats://u:p@h2:2"), "a.b"
    )
    assert parse(["nats://h1:1/", "nats://h2:2/x.y", "nats://h3:3/x.y"]).subject == "x.y"
    assert parse(["nats://[::1]:4222"]) == NatsTarget(("nats://[::1]:4222",), None)


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (
            ["http://h:1"],
            "bad NATS server 'http://h:1': use nats://HOST:PORT[/SUBJECT],"
            " several servers separated by commas",
        ),
        (["nats://h"], "bad NATS server 'nats://h'"),
        (["nats://h:0"], "bad NATS server 'nats://h:0'"),
        (["nats://h:x"], "bad NATS server 'nats://h:x'"),
        (["nats://:1"], "bad NATS server 'nats://:1'"),
        ([], "no NATS server given: use nats://HOST:PORT[/SUBJECT], several servers"),
        (["nats://h:1/c.d", "nats://h:2/a.b"], "several subjects given (a.b, c.d): give one"),
        (["nats://h:1/a..b"], "bad subject 'a..b': dot-separated tokens, no wildcards"),
        (["nats://h:1/a.b."], "bad subject 'a.b.'"),
        (["nats://h:1/a.*"], "bad subject 'a.*'"),
        (["nats://h:1/a.>"], "bad subject 'a.>'"),
    ],
)
def test_bad_servers_and_subjects(urls: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        NatsTarget.parse(urls)


def test_a_subject_with_whitespace_is_refused() -> None:
    for subject in ("a b", "a\u00a0b"):  # (urlsplit drops tabs and line ends)
        with pytest.raises(ValueError, match=f"^bad subject {re.escape(repr(subject))}"):
            NatsTarget.parse([f"nats://h:1/{subject}"])


def test_subject_tokens() -> None:
    assert subject_token("db.2 x*y>z\tw") == "db_2_x_y_z_w"
    assert subject_token("web-1_a") == "web-1_a"
    assert subject_token("") == "_"


def test_subject_given_or_built_from_host_and_pipeline() -> None:
    sink = NatsSink("nats://h:1", host="db.2")
    assert sink.describe_subject("disk io") == "flowtrace.db_2.disk_io"
    named = NatsSink("nats://h:1", host="a", pipeline="p.q")
    assert named.describe_subject("x") == "flowtrace.a.p_q"
    assert NatsSink("nats://h:1/s.t", host="a").describe_subject("x") == "s.t"
    assert NatsSink("nats://h:1/s.t", "u.v", host="a").describe_subject("x") == "u.v"


@pytest.mark.parametrize(
    "options",
    [
        {"framing": "json"},
        {"buffer": 0},
        {"max_inflight": 0},
        {"replicas": 0},
        {"backoff": 0.0},
        {"backoff": 2.0, "backoff_max": 1.0},
        {"ack_timeout": 0.0},
        {"close_timeout": -0.5},
        {"backoff": math.inf, "backoff_max": math.inf},
        {"backoff_max": math.inf},
        {"ack_timeout": math.inf},
        {"connect_timeout": math.inf},
        {"close_timeout": math.inf},
        {"close_timeout": math.nan},
    ],
)
def test_bad_arguments_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^(need|framing must be ndjson or msgpack, not 'json')"):
        NatsSink("nats://h:1", **options)


def test_the_edges_of_the_arguments_are_accepted() -> None:
    sink = NatsSink(
        "nats://h:1",
        buffer=1,
        max_inflight=1,
        replicas=1,
        backoff=1.0,
        backoff_max=1.0,
        close_timeout=0.0,
        ack_timeout=0.001,
    )
    assert (sink.buffer, sink.backoff, sink.backoff_max, sink.close_timeout) == (1, 1.0, 1.0, 0.0)
    times = "need 0 < backoff <= backoff_max, ack_timeout > 0, close_timeout >= 0, all finite"
    with pytest.raises(ValueError, match=f"^{re.escape(times)}$"):
        NatsSink("nats://h:1", backoff=-1.0)
    sizes = "need buffer >= 1, max_inflight >= 1 and replicas >= 1"
    with pytest.raises(ValueError, match=f"^{re.escape(sizes)}$"):
        NatsSink("nats://h:1", replicas=-1)


def test_the_stream_the_sink_creates() -> None:
    assert STREAM_LIMITS == {"max_age": 86400.0, "max_bytes": 1 << 30, "duplicate_window": 600.0}
    config = stream_config("S", ["flowtrace.>"], 3)
    assert (config.name, config.subjects, config.num_replicas) == ("S", ["flowtrace.>"], 3)
    assert (config.retention, config.storage, config.discard) == (
        RetentionPolicy.LIMITS,
        StorageType.FILE,
        DiscardPolicy.OLD,
    )
    assert (config.max_age, config.max_bytes, config.duplicate_window) == (86400.0, 1 << 30, 600.0)
    assert isinstance(config.max_bytes, int)


async def test_the_backoff_doubles_up_to_its_bound_with_jitter() -> None:
    """Each pause lasts backoff * 2**(failures - 1), at most backoff_max,
    times a factor drawn from [0.5, 1.0] (here from seeded generators: low
    and high draws)."""
    sink = NatsSink("nats://h:1", backoff=0.1, backoff_max=0.3)
    for failures, seed, base in [(1, 14, 0.1), (2, 2, 0.2), (3, 1, 0.3), (40, 15, 0.3)]:
        sink._failures = failures
        sink._random = random.Random(seed)
        expected = base * random.Random(seed).uniform(0.5, 1.0)
        started = time.monotonic()
        await sink._pause()
        took = time.monotonic() - started
        assert expected - 0.005 <= took < expected + 0.05, (failures, took, expected)


# --- messages, stream and reports, against one server --------------------


async def test_headers_and_payload_of_each_message(one_node: NatsCluster) -> None:
    """Each message: the record in schema v1 as one JSON object without its
    newline; Nats-Msg-Id host.run.seq and the same parts in headers of their
    own. A result leaves with hosts=[host] and wall-clock bounds, unless it
    has them already."""
    url = one_node.urls[0] + "/flowtrace.web1.disk"
    walled = datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    items: list[Any] = [
        7,
        Histogram(
            field="lat_ns",
            unit="usecs",
            scale="log2",
            buckets=[Bucket(0, 1, 2)],
            window_start=1.0,
            window_end=3.5,
        ),
        WindowResult(aggregate="count", value=3, window_start=2.0, hosts=["other"]),
        WindowResult(aggregate="count", value=4, wall_start=walled, window_start=2.0),
        WindowResult(aggregate="count", value=5),
        WindowResult(aggregate="count", value=6, hosts=["a", "b"]),
    ]
    run = Run(Pipeline(ListSource(items, name="disk"), [], NatsSink(url, host="web1")))
    stats = await run.run()
    sink = run.sink
    assert isinstance(sink, NatsSink)
    assert (stats.stage("nats").received, sink.delivered, sink.duplicates) == (6, 6, 0)
    messages = await stream_messages(one_node.urls[0], "flowtrace.web1.disk")
    assert [m.headers for m in messages] == [
        {
            "Nats-Msg-Id": f"web1.{sink.run_id}.{seq}",
            "Flowtrace-Host": "web1",
            "Flowtrace-Run": sink.run_id,
            "Flowtrace-Seq": str(seq),
            "Flowtrace-Pipeline": "disk",
            "Flowtrace-Encoding": "json",
        }
        for seq in range(1, 7)
    ]
    assert len(sink.run_id) == 12
    data = [json.loads(m.data) for m in messages]
    hist = data[1]["data"]
    assert unix_seconds(hist["wall_end"]) - unix_seconds(hist["wall_start"]) == pytest.approx(2.5)
    assert unix_seconds(data[2]["data"]["wall_start"]) - unix_seconds(
        hist["wall_start"]
    ) == pytest.approx(1.0)
    expected = [
        items[0],
        msgspec.structs.replace(
            items[1],
            wall_start=datetime.fromisoformat(hist["wall_start"].replace("Z", "+00:00")),
            wall_end=datetime.fromisoformat(hist["wall_end"].replace("Z", "+00:00")),
            hosts=["web1"],
        ),
        msgspec.structs.replace(
            items[2],
            wall_start=datetime.fromisoformat(data[2]["data"]["wall_start"].replace("Z", "+00:00")),
        ),
        msgspec.structs.replace(items[3], hosts=["web1"]),
        msgspec.structs.replace(items[4], hosts=["web1"]),
        items[5],
    ]
    assert data[2]["data"]["wall_end"] is None and data[2]["data"]["hosts"] == ["other"]
    encoder = RecordEncoder()
    for message, item in zip(messages, expected, strict=True):
        assert message.data == encoder.json_line(item)[:-1]


async def test_msgpack_framing(one_node: NatsCluster) -> None:
    url = one_node.urls[0] + "/flowtrace.h.p"
    run = Run(Pipeline(ListSource([1, "two", 3.5]), [], NatsSink(url, host="h", framing="msgpack")))
    await run.run()
    messages = await stream_messages(one_node.urls[0], "flowtrace.h.p")
    encoder = RecordEncoder()
    assert [m.data for m in messages] == [encoder.msgpack(x) for x in [1, "two", 3.5]]
    assert {m.headers["Flowtrace-Encoding"] for m in messages} == {"msgpack"}


async def stream_config_of(url: str, name: str) -> Any:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(name)).config
    finally:
        await nc.close()


async def test_the_sink_creates_its_stream_once_and_reports(one_node: NatsCluster) -> None:
    url = one_node.urls[0]
    reports = []
    for n in (3, 2):
        sink = NatsSink(url + "/flowtrace.a.b", host="h", stream="S1")
        run = Run(Pipeline(ListSource(range(n)), [], sink))
        await run.run()
        reports.append(run.stats.attached)
    port = one_node.servers[0].port
    assert reports == [
        [
            f"nats: connected to 127.0.0.1:{port}",
            "nats: created stream S1 (flowtrace.>, 1 replica(s), 24 h, 1 GiB,"
            " duplicates detected over 10 min)",
            "nats: 3 records acknowledged by JetStream on flowtrace.a.b"
            " (0 resends were duplicates; 1 connections)",
        ],
        [
            f"nats: connected to 127.0.0.1:{port}",
            "nats: 2 records acknowledged by JetStream on flowtrace.a.b"
            " (0 resends were duplicates; 1 connections)",
        ],
    ]
    config = await stream_config_of(url, "S1")
    assert (config.subjects, config.num_replicas, config.max_age) == (["flowtrace.>"], 1, 86400.0)
    assert (config.max_bytes, config.duplicate_window) == (1 << 30, 600.0)
    assert (config.storage, config.discard) == (StorageType.FILE, DiscardPolicy.OLD)


async def test_an_existing_stream_is_used_with_create_no(one_node: NatsCluster) -> None:
    url = one_node.urls[0] + "/flowtrace.h.p"
    await Run(Pipeline(ListSource(range(2)), [], NatsSink(url, stream="MINE"))).run()
    run = Run(Pipeline(ListSource(range(3)), [], NatsSink(url, create_stream=False)))
    await run.run()
    assert run.sink.delivered == 3  # type: ignore[attr-defined]
    assert not any("created" in line for line in run.stats.attached)


async def test_a_one_token_subject_is_its_own_pipeline_header(one_node: NatsCluster) -> None:
    nc = await nats.connect(one_node.urls[0])
    try:
        await nc.jetstream().add_stream(name="ONE", subjects=["events"])
    finally:
        await nc.close()
    sink = NatsSink(one_node.urls[0] + "/events", create_stream=False)
    await Run(Pipeline(ListSource(range(2)), [], sink)).run()
    messages = await stream_messages(one_node.urls[0], "events")
    assert [m.headers["Flowtrace-Pipeline"] for m in messages] == ["events", "events"]


async def test_a_stream_the_server_refuses_fails_the_run_in_one_line(
    one_node: NatsCluster,
) -> None:
    """Another stream captures part of flowtrace.> but not this subject: the
    server refuses a stream for all of flowtrace.> (subjects overlap)."""
    nc = await nats.connect(one_node.urls[0])
    try:
        await nc.jetstream().add_stream(name="OTHER", subjects=["flowtrace.x.>"])
    finally:
        await nc.close()
    url = one_node.urls[0] + "/flowtrace.h.p"
    run = Run(Pipeline(ListSource(range(2)), [], NatsSink(url, close_timeout=1)))
    with pytest.raises(StageError) as failed:
        await run.run()
    assert str(failed.value) == (
        "stage 'nats' failed: StreamMissing: cannot create stream 'FLOWTRACE' for"
        " 'flowtrace.h.p': subjects overlap with an existing stream"
    )


def test_the_sink_needs_the_asyncio_loop() -> None:
    run = Run(Pipeline(ListSource([1]), [], NatsSink("nats://127.0.0.1:1")))
    with pytest.raises(StageError) as refused:
        anyio.run(run.run, backend="trio")
    assert str(refused.value) == (
        "stage 'nats' failed: RuntimeError: the NATS sink needs the asyncio event loop"
        " (nats-py is asyncio only); run the pipeline with anyio's asyncio backend"
    )


async def test_a_record_that_cannot_be_encoded_fails_the_run_counted() -> None:
    sink = NatsSink("nats://127.0.0.1:1/a.b", close_timeout=0.1)
    run = Run(Pipeline(ListSource([1, 2, object(), 4], batch_size=2), [], sink))
    with pytest.raises(StageError, match=r"^stage 'nats' failed: TypeError: "):
        await run.run()
    counts = run.stats.stage("nats")
    assert counts.dropped == {"encode_error": 2, "undelivered": 2}
    assert counts.received == 4


# --- servers that come late or go away ------------------------------------


async def test_a_server_that_comes_up_late_gets_the_buffered_records(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    server = NatsServer(tmp_path / "nats", "late")
    source = FeedSource[int](int)
    sink = NatsSink(server.url + "/flowtrace.h.p", buffer=50, backoff=0.02, backoff_max=0.05)
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        sink = cast(NatsSink, run.sink)
        await source.feed(30)
        await until_true(lambda: sink._failures >= 3)  # it has retried, backing off
        assert (sink.delivered, sink.connects, sink.buffered) == (0, 0, 30)
        await anyio.to_thread.run_sync(server.start)
        await source.feed(10)
        source.sender.close()
    try:
        lines = run.stats.attached
        refused = "nats: no servers available for connection"
        assert lines[0] == f"nats: cannot connect to {server.url}: {refused}"
        assert sum("cannot connect" in line for line in lines) == 1, lines
        assert f"nats: connected to 127.0.0.1:{server.port}" in lines
        assert re.fullmatch(
            r"nats: 40 records acknowledged by JetStream on flowtrace\.h\.p"
            r" \(0 resends were duplicates; \d+ connections\)",
            lines[-1],
        ), lines
        assert (sink.delivered, run.stats.stage("nats").dropped) == (40, {})
        messages = await stream_messages(server.url, "flowtrace.h.p")
        assert [json.loads(m.data)["data"] for m in messages] == list(range(40))
    finally:
        server.kill()


async def test_a_lost_connection_is_reported_and_everything_arrives_once(
    one_node: NatsCluster,
) -> None:
    server = one_node.servers[0]
    source = FeedSource[int](int)
    sink = NatsSink(server.url + "/flowtrace.h.p", buffer=100, backoff=0.02, backoff_max=0.05)
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        sink = cast(NatsSink, run.sink)
        await source.feed(50)
        await until_true(lambda: sink.delivered == 50)
        await anyio.to_thread.run_sync(server.kill)
        await until_true(lambda: sink.disconnects == 1)
        await source.feed(20)
        await until_true(lambda: sink.buffered == 20)
        await anyio.to_thread.run_sync(server.start)
        await source.feed(10)
        source.sender.close()
    lines = run.stats.attached
    assert lines[:3] == [
        f"nats: connected to 127.0.0.1:{server.port}",
        "nats: created stream FLOWTRACE (flowtrace.>, 1 replica(s), 24 h, 1 GiB,"
        " duplicates detected over 10 min)",
        "nats: connection lost; buffering up to 100 records",
    ]
    assert f"nats: connected to 127.0.0.1:{server.port}" in lines[3:]
    assert (sink.delivered, run.stats.stage("nats").dropped) == (80, {})
    assert sink.disconnects == 1 and sink.connects >= 2
    messages = await stream_messages(server.url, "flowtrace.h.p")
    assert [json.loads(m.data)["data"] for m in messages] == list(range(80))


def all_stopped(pid: int) -> bool:
    """Every thread of process ``pid`` is stopped (SIGSTOP took effect)."""
    states = [
        (task / "stat").read_text().rpartition(")")[2].split()[0]
        for task in Path(f"/proc/{pid}/task").iterdir()
    ]
    return all(state == "T" for state in states)


class FewReports(NatsSink):
    """Reports its first three connection changes only."""

    reported_changes = 3


async def test_a_server_that_stops_answering_gets_the_records_again(
    one_node: NatsCluster,
) -> None:
    """SIGSTOP: the connection stays up but nothing is acknowledged within
    ack_timeout; the records go out again with their ids until the server
    answers (SIGCONT), and are stored once. Twice: the second time is past
    the three changes this sink reports."""
    server = one_node.servers[0]
    process = server.process
    assert process is not None
    source = FeedSource[int](int)
    sink = FewReports(
        server.url + "/flowtrace.h.p", buffer=100, ack_timeout=0.5, backoff=0.02, backoff_max=0.05
    )
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        sink = cast(FewReports, run.sink)
        await source.feed(50)
        await until_true(lambda: sink.delivered == 50)
        for delivered in (60, 70):
            process.send_signal(signal.SIGSTOP)
            try:
                await until_true(lambda: all_stopped(process.pid))
                await source.feed(10)
                await until_true(lambda: sink._failures >= 2)  # sent again at least once
            finally:
                process.send_signal(signal.SIGCONT)
            await until_true(lambda: sink.delivered == delivered)  # noqa: B023 - awaited here
        source.sender.close()
    lines = run.stats.attached
    assert lines[2:] == [
        "nats: 10 records not acknowledged; buffering up to 100 records",
        "nats: delivering again; further changes are counted, not reported",
        "nats: 70 records acknowledged by JetStream on flowtrace.h.p"
        f" ({sink.duplicates} resends were duplicates; 1 connections)",
    ], lines
    assert sink.state == "delivering again"
    assert (sink.connects, sink.disconnects, run.stats.stage("nats").dropped) == (1, 0, {})
    messages = await stream_messages(server.url, "flowtrace.h.p")
    assert [json.loads(m.data)["data"] for m in messages] == list(range(70))
    assert sink.duplicates <= 20
