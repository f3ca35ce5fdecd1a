"""Real NATS servers for tests: ``nats-server`` with JetStream, its store in a
temporary directory, on loopback ports; one node or a three-node cluster.

Each server can be killed (SIGKILL), stopped (SIGTERM) and started again
on the same ports and store, which is what the fleet tests do to it.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

__all__ = ["NATS_SERVER", "NatsCluster", "NatsServer", "free_port"]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 (optionally a cluster member)."""

    def __init__(self, root: Path, name: str, cluster_port: int | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.store = root / name
        self.config = root / f"{name}.conf"
        self.log = root / f"{name}.log"
        self.routes: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            f'jetstream {{ store_dir: "{self.store}", max_memory_store: 64MB,'
            " max_file_store: 1GB }",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: flowtrace-test, listen: 127.0.0.1:{self.cluster_port},"
                f" routes: [{routes}] }}"
            )
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)  # poll interval of this bounded wait
        raise RuntimeError(f"nats-server {self.name} did not listen: {self.log.read_text()}")

    def healthy(self) -> bool:
        """JetStream on this server is ready (``/healthz``)."""
        try:
            url = f"http://127.0.0.1:{self.monitor_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(json.loads(answer.read()).get("status") == "ok")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the server shuts down."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
        self.process = None


class NatsCluster:
    """``size`` servers (1: a single node) sharing one cluster; ``urls``
    lists them for clients."""

    def __init__(self, root: Path, size: int) -> None:
        clustered = size > 1
        self.servers = [
            NatsServer(root, f"n{i + 1}", free_port() if clustered else None) for i in range(size)
        ]
        for server in self.servers:
            others = [s for s in self.servers if s is not server]
            server.routes = [s.cluster_port for s in others if s.cluster_port]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self) -> None:
        for server in self.servers:
            server.start()
        self.wait_healthy()

    def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(s.healthy() for s in self.servers if s.process is not None):
                return
            time.sleep(0.1)  # poll interval of this bounded wait
        raise RuntimeError("NATS servers did not become healthy")

    def close(self) -> None:
        for server in self.servers:
            server.kill()
