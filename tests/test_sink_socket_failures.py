"""The socket sink against peers that are not there or go away: each
failed attempt waits backoff * 2**(failures - 1), at most backoff_max,
times a factor drawn from [0.5, 1.0] (a seeded generator here), and only
the first failure is reported; a failed send is reported with its reason."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path
from typing import cast

import anyio
import pytest
from feeding import FeedSource, until_true

from flowtrace.sinks.socket import SocketSink
from flowtrace.stages import Pipeline

pytestmark = pytest.mark.anyio


async def test_failed_attempts_back_off_doubling_to_the_bound(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/nobody.sock"
    source = FeedSource[int](int)
    sink = SocketSink(address, backoff=0.1, backoff_max=0.3, close_timeout=0.1, reports=False)
    draws = random.Random(7)
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        sink = cast(SocketSink, run.sink)
        sink._random = random.Random(7)
        for failures, base in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)]:
            await until_true(lambda: time.monotonic() >= sink._next_attempt)
            before = time.monotonic()
            await source.sender.send([failures])
            await until_true(lambda: sink._failures >= failures)  # noqa: B023 - awaited here
            after = time.monotonic()
            assert sink._failures == failures
            delay = base * draws.uniform(0.5, 1.0)
            assert sink._next_attempt - after <= delay <= sink._next_attempt - before
        source.sender.close()
    assert run.stats.attached == [
        f"socket: {address}: cannot connect: ENOENT; buffering (1 events held, up to 10000 records)"
    ]


async def test_a_datagram_peer_that_went_away_is_reported_with_the_reason(tmp_path: Path) -> None:
    path = str(tmp_path / "peer.sock")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(path)
    source = FeedSource[int](int)
    sink = SocketSink(f"unixgram://{path}", close_timeout=0.1, reports=False)
    async with anyio.create_task_group() as tg:
        run = await tg.start(Pipeline(source, [], sink).run)
        sink = cast(SocketSink, run.sink)
        await source.sender.send([1, 2])
        await until_true(lambda: sink.delivered == 2)
        assert [json.loads(peer.recv(200))["data"] for _ in range(2)] == [1, 2]
        peer.close()
        await source.sender.send([3])
        await until_true(lambda: sink.disconnects == 1)
        source.sender.close()
    assert run.stats.attached[:2] == [
        f"socket: connected to unixgram://{path}",
        f"socket: unixgram://{path}: send failed: Connection refused;"
        " buffering (1 events held, up to 10000 records)",
    ]
