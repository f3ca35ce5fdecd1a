"""``python -m bench.fleet``: the fleet path's throughput on this machine.

* **publish**: records per second one agent delivers through the NATS
  JetStream sink, each acknowledged by the server (a local ``nats-server
  -js``, file store), against the NDJSON socket sink to a local TCP reader
  (acknowledged by TCP only). The records are disk-latency events, one
  message each, so this is the raw-event worst case; agents normally ship
  a few histograms per window.
* **collect**: records per second a collector reads from its durable
  consumer, merges with ``merge_by`` and acknowledges once written (to a
  sink that keeps nothing), and the merge alone on records in memory.

No root and no kernel needed: it needs ``nats-server`` on the PATH
(``scripts/setup.sh --test`` installs it). Prints a table and writes
``bench/results/fleet-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import msgspec

from flowtrace.operators import Tumbling, merge_by
from flowtrace.records import Bucket, Histogram
from flowtrace.runtime import Run
from flowtrace.sinks.nats import NatsSink
from flowtrace.sinks.socket import SocketSink
from flowtrace.sources.nats import nats_source
from flowtrace.stages import Pipeline, Sink
from flowtrace.testing import ListSource, OperatorHarness

RESULTS = Path(__file__).resolve().parent / "results"


class DiskLatency(msgspec.Struct):
    ts: int
    lat_ns: int
    dev: int


class Discard(Sink[Any]):
    """Takes every record and keeps nothing."""

    async def write(self, batch: list[Any]) -> None:
        pass


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = anyio.run(fn)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _tcp_reader(port_holder: list[int], got: list[int], stop: threading.Event) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port_holder.append(server.getsockname()[1])
        conn, _ = server.accept()
        with conn:
            conn.settimeout(0.2)
            total = 0
            while not stop.is_set():
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    break
                total += data.count(b"\n")
            got.append(total)


def _histograms(hosts: int, windows: int) -> list[Histogram]:
    return [
        Histogram(
            field="lat_ns",
            unit="usecs",
            scale="log2",
            buckets=[Bucket(1 << (s - 1), (1 << s) - 1, (h + w + s) % 17) for s in range(2, 14)],
            wall_start=datetime.fromtimestamp(1_800_000_000.0 + 10 * w, timezone.utc),
            wall_end=datetime.fromtimestamp(1_800_000_010.0 + 10 * w, timezone.utc),
            hosts=[f"host{h}"],
        )
        for w in range(windows)
        for h in range(hosts)
    ]


def run(count: int, hosts: int, windows: int) -> dict[str, Any]:
    events = [DiskLatency(ts=i, lat_ns=1000 + i % 5000, dev=8) for i in range(count)]
    results: dict[str, Any] = {"count": count}
    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        server = subprocess.Popen(
            [shutil.which("nats-server") or "nats-server", "-js", "-sd", tmp, "-a", "127.0.0.1",
             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            url = f"nats://127.0.0.1:{port}/flowtrace.bench.disk"

            async def publish() -> int:
                run = Run(Pipeline(ListSource(events, batch_size=1000), [], NatsSink(url)))
                await run.run()
                return int(run.sink.delivered)  # type: ignore[attr-defined]

            delivered, wall, cpu = _timed(publish)
            results["nats_publish"] = {"delivered": delivered, "wall_s": wall, "cpu_s": cpu}

            merged_in = _histograms(hosts, windows)

            async def seed() -> int:
                plan = Pipeline(ListSource(merged_in, batch_size=1000), [], NatsSink(url))
                run = Run(plan)
                await run.run()
                return int(run.sink.delivered)  # type: ignore[attr-defined]

            anyio.run(seed)

            async def collect() -> int:
                source = nats_source(
                    f"nats://127.0.0.1:{port}", "flowtrace.*.disk", durable="bench"
                )
                run = Run(Pipeline(source, [merge_by(window=Tumbling(10))], Discard()))
                async with anyio.create_task_group() as tg:
                    handle = await tg.start(run.run)
                    # counters, not events: poll
                    while handle.stats.chain[0].received < count + len(merged_in):  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    handle.stop()
                return int(handle.stats.chain[0].received)

            read, wall, cpu = _timed(collect)
            results["nats_collect"] = {"records": read, "wall_s": wall, "cpu_s": cpu}
        finally:
            server.terminate()
            server.wait(10)

    port_holder: list[int] = []
    got: list[int] = []
    stop = threading.Event()
    reader = threading.Thread(target=_tcp_reader, args=(port_holder, got, stop))
    reader.start()
    while not port_holder:
        time.sleep(0.01)

    async def socket_publish() -> int:
        sink = SocketSink(f"tcp://127.0.0.1:{port_holder[0]}", reports=False)
        run = Run(Pipeline(ListSource(events, batch_size=1000), [], sink))
        await run.run()
        return int(run.sink.delivered)  # type: ignore[attr-defined]

    delivered, wall, cpu = _timed(socket_publish)
    stop.set()
    reader.join()
    results["socket_publish"] = {"delivered": delivered, "wall_s": wall, "cpu_s": cpu}

    merge_in = _histograms(hosts, windows)
    harness = OperatorHarness(merge_by(window=Tumbling(10)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(0, len(merge_in), 1000):
        harness.feed(merge_in[i : i + 1000])
    harness.finish()
    results["merge_only"] = {
        "records": len(merge_in),
        "merged": len(harness.emitted),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }
    return results


def render(results: dict[str, Any]) -> str:
    rows = [
        ("agent -> JetStream (acked)", results["nats_publish"], "delivered"),
        ("agent -> NDJSON socket (TCP)", results["socket_publish"], "delivered"),
        ("collector: consume+merge+ack", results["nats_collect"], "records"),
        ("merge_by alone (in memory)", results["merge_only"], "records"),
    ]
    lines = [f"{'path':32} {'records':>9} {'records/s':>11} {'us CPU/rec':>11}"]
    for name, r, key in rows:
        n = r[key]
        lines.append(
            f"{name:32} {n:>9} {n / r['wall_s']:>11,.0f} {r['cpu_s'] / max(n, 1) * 1e6:>11.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=100_000, help="events one agent sends")
    parser.add_argument("--hosts", type=int, default=100, help="hosts whose results are merged")
    parser.add_argument("--windows", type=int, default=100, help="windows per host to merge")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    results = run(args.count, args.hosts, args.windows)
    print(render(results))
    args.results.mkdir(exist_ok=True)
    (args.results / "fleet-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
