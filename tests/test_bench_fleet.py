"""``python -m bench.fleet`` runs end to end and its counts add up (a smoke
test with a tiny N: no performance figure is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from natsserver import NATS_SERVER

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="needs nats-server")
def test_fleet_bench_delivers_and_merges_everything(tmp_path: Path) -> None:
    args = ["-n", "2000", "--hosts", "5", "--windows", "4", "--results", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    assert "agent -> JetStream (acked)" in done.stdout
    results = json.loads((tmp_path / "fleet-latest.json").read_text())
    assert results["nats_publish"]["delivered"] == 2000
    assert results["socket_publish"]["delivered"] == 2000
    assert results["nats_collect"]["records"] == 2000 + 5 * 4
    assert (results["merge_only"]["records"], results["merge_only"]["merged"]) == (20, 4)
