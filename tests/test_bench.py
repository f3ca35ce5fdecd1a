"""The benchmark harness runs end to end and its accounting adds up.

A smoke test with a tiny N: no performance figure is asserted here (those
are benchmark results, compared side by side in one run, never timed
assertions in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent


def bench(results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS --results RESULTS --quiet``, as a user runs it.
    Past its time, the failure shows the end of each contender's log, the
    last written last (the one that was running)."""
    command = [sys.executable, "-m", "bench", *args, "--results", str(results), "--quiet"]
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    except subprocess.TimeoutExpired as exc:
        logs = sorted((results / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        tails = [f"{p.name}: {p.read_text(errors='replace')[-600:]}" for p in logs]
        raise AssertionError(f"{exc}\n" + "\n".join(tails)) from None


def test_every_contender_accounts_for_every_event(tmp_path: Path) -> None:
    count = 3000
    done = bench(tmp_path, "-n", str(count), "--rounds", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "latest.json").read_text())
    expected = {"ft-count", "ft-count-kernel", "ft-ndjson", "ft-hist", "ft-hist-kernel"}
    expected |= {"ft-count-perf", "bcc-perf", "bcc-ringbuf"}
    assert expected <= set(result["summary"])
    for name, runs in result["runs"].items():
        assert len(runs) == 1, name
        run = runs[0]
        assert "error" not in run, f"{name}: {run.get('error')}"
        assert run["generated"] == count, name
        assert run["delivered"] + run["dropped"] == count, name
        assert run["dropped"] == sum(run["dropped_by"].values()), name
        assert run["adds_up"] and run["answer_ok"], name
    assert not list((tmp_path / "scratch").glob("*.ndjson")), "NDJSON output left behind"


def test_latency_table_has_every_contender_and_rate(tmp_path: Path) -> None:
    """``--latency`` at a small size: every contender, every rate, each
    event either arrived or counted as lost by the contender; the table
    lists them all (no figure is asserted)."""
    seconds = 0.1
    done = bench(tmp_path, "--latency", "--seconds", str(seconds))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "latest-latency.json").read_text())
    names = ["ft-console", "ft-console-perf", "ft-console-0", "ft-ndjson", "bcc-perf"]
    names.append("bcc-ringbuf")
    rates = {"10": 1, "1000": 100, "100000": 10_000}
    assert list(result["summary"]) == names
    for name in names:
        (run,) = result["runs"][name]
        assert "error" not in run, f"{name}: {run.get('error')}"
        assert run["generated"] == sum(rates.values()), name
        assert run["arrived"] + run["dropped"] == run["generated"], name
        for rate, count in rates.items():
            assert run["rates"][rate]["generated"] == count, (name, rate)
            latencies = run["rates"][rate]["latencies_ms"]
            assert all(v > 0 for v in latencies), (name, rate)
        assert sum(len(run["rates"][r]["latencies_ms"]) for r in rates) == run["arrived"], name
    rows = [line.split() for line in done.stdout.splitlines()]
    table = {(row[0], row[1]) for row in rows if len(row) == 7 and row[0] in names}
    assert table == {(n, r) for n in names for r in ("10", "1,000", "100,000")}
    assert not list((tmp_path / "scratch").glob("*.fifo")), "FIFO left behind"


def test_latency_runs_the_rates_it_is_given(tmp_path: Path) -> None:
    done = bench(tmp_path, "--latency", "--rates", "10,1000", "--seconds", "0.1",
                 "--only", "ft-console,bcc-perf")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "latest-latency.json").read_text())
    for name in ("ft-console", "bcc-perf"):
        (run,) = result["runs"][name]
        assert {r: v["generated"] for r, v in run["rates"].items()} == {"10": 1, "1000": 100}
    for bad in ("10,x", "0", "nan"):
        refused = bench(tmp_path, "--latency", "--rates", bad)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith("python -m bench: error: --rates")
