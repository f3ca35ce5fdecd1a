"""Event-to-sink latency: how long an event takes to reach the reader of the
sink's output, at paced rates.

One run of a contender: the load generator makes getppid(2) calls in
phases (by default 10, 1,000 and 100,000 per second, 2 s each, 0.25 s
apart); the contender prints each event's kernel timestamp (``ts``, from
``bpf_ktime_get_ns()``, which is ``CLOCK_MONOTONIC``) to its output, and
the harness reads that output as a user would: the pipe of the
contender's standard output (the console sink, the bcc loops' ``print``),
or a FIFO the NDJSON sink writes. A reader thread stamps each chunk it
reads with ``CLOCK_MONOTONIC``; an event's latency is that stamp minus
its ``ts``, so it covers the probe, the buffer, the contender's reading,
its pipeline and the write to the pipe. Events are assigned to phases by
their timestamp (each phase's start and end come from the generator).

Per contender and rate: events made, events that arrived, and the
latency's median, 99th percentile and maximum (over every round).
Events that never arrived are in the accounting (the contender's own
report says whether it counted them as lost), not in the percentiles.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import ROOT, Failed, machine
from bench.loadgen import Loadgen, build

__all__ = ["LATENCY_CONTENDERS", "RATES", "LatencyOptions", "render_latency", "run_latency"]

RATES = (10.0, 1_000.0, 100_000.0)
"""Events per second of the phases."""

TARGET_RATES = (10.0, 1_000.0)
"""The rates the latency targets are about (a person watching, an alert)."""


@dataclass(frozen=True)
class LatencyContender:
    """A contender printing each event's ``ts``: to stdout, or with
    ``fifo`` to the FIFO path given as its last argument (NDJSON lines)."""

    name: str
    what: str
    module: str
    extra: tuple[str, ...] = ()
    fifo: bool = False

    def argv(self, pid: int, fifo: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.module,
            str(pid),
            *self.extra,
            *([str(fifo)] if self.fifo else []),
        ]


LATENCY_CONTENDERS: tuple[LatencyContender, ...] = (
    LatencyContender(
        "ft-console",
        "flowtrace: tracepoint -> ConsoleSink (one line per event) -> stdout pipe",
        "bench.contenders.ft_console",
    ),
    LatencyContender(
        "ft-console-perf",
        "flowtrace: ft-console on its perf-buffer transport (as lesson 7, hello_perf_output)",
        "bench.contenders.ft_console",
        extra=("--perf",),
    ),
    LatencyContender(
        "ft-console-0",
        "flowtrace: ft-console with Pipeline(latency=0): no record held on purpose",
        "bench.contenders.ft_console",
        extra=("--latency", "0"),
    ),
    LatencyContender(
        "ft-ndjson",
        "flowtrace: tracepoint -> NdjsonSink -> FIFO",
        "bench.contenders.ft_ndjson",
        fifo=True,
    ),
    LatencyContender(
        "bcc-perf",
        "plain bcc, tutorial style: perf buffer, callback prints each event (flushed)",
        "bench.contenders.bcc_perf",
        extra=("--print",),
    ),
    LatencyContender(
        "bcc-ringbuf",
        "plain bcc, tutorial style: ring buffer, callback prints each event (flushed)",
        "bench.contenders.bcc_ringbuf",
        extra=("--print",),
    ),
)

BASELINE = "bcc-perf"


@dataclass(frozen=True)
class LatencyOptions:
    seconds: float = 2.0
    """Length of each phase."""
    rates: tuple[float, ...] = RATES
    rounds: int = 1
    only: tuple[str, ...] = ()
    results: Path = ROOT / "bench" / "results"


class StampedReader:
    """Reads ``fd`` to its end in a thread, stamping every line with the
    ``CLOCK_MONOTONIC`` nanoseconds at which the read that completed it
    returned. Lines starting with ``{`` are also queued for the caller (the
    contender protocol) when ``protocol`` is set."""

    def __init__(self, fd: int, protocol: bool, until: bytes | None = None) -> None:
        self.fd = fd
        self.lines: list[tuple[int, bytes]] = []
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._protocol = protocol
        self._until = until
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tail = b""
        try:
            while chunk := os.read(self.fd, 1 << 16):
                at = time.monotonic_ns()
                *whole, tail = (tail + chunk).split(b"\n")
                for line in whole:
                    if self._protocol and line.startswith(b"{"):
                        self.messages.put(json.loads(line))
                    elif line == self._until:
                        return
                    else:
                        self.lines.append((at, line))
        finally:
            self.messages.put(None)

    def message(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Failed(f"timed out waiting for {waiting_for}") from None
        if message is None:
            raise Failed(f"output ended before {waiting_for}")
        return message

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _timestamps_stdout(lines: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """(arrival, ts) of lines holding one integer (the event's ts)."""
    return [(at, int(line)) for at, line in lines if line.strip().isdigit()]


def _timestamps_ndjson(lines: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """(arrival, ts) of NDJSON ``event`` records."""
    decode = msgspec.json.Decoder().decode
    out = []
    for at, line in lines:
        record = decode(line)
        if record.get("type") == "event":
            out.append((at, int(record["data"]["ts"])))
    return out


def _wait_quiet(count: Callable[[], int], expected: int, deadline: float) -> None:
    """Until ``expected`` lines arrived, or none for a second, or the deadline."""
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now >= expected:
            return
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        time.sleep(0.05)


def run_one(
    contender: LatencyContender, binary: Path, options: LatencyOptions, scratch: Path, log: Path
) -> dict[str, Any]:
    """One run: every phase against one contender process; raw latencies by rate."""
    phases = [(max(1, round(rate * options.seconds)), rate) for rate in options.rates]
    fifo = scratch / f"{contender.name}.fifo"
    fifo.unlink(missing_ok=True)
    fifo_fd = -1
    if contender.fifo:
        os.mkfifo(fifo)
        fifo_fd = os.open(fifo, os.O_RDWR)  # a writer too: reads never see end of file
    loadgen = Loadgen(binary, *phases[0], then=phases[1:])
    with log.open("w") as stderr:
        child = subprocess.Popen(
            contender.argv(loadgen.pid, fifo),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
        )
    assert child.stdout is not None and child.stdin is not None
    out = StampedReader(child.stdout.fileno(), protocol=True)
    events = StampedReader(fifo_fd, protocol=False, until=b"end") if contender.fifo else out
    try:
        if not out.message(time.monotonic() + 180, "the ready line").get("ready"):
            raise Failed("the contender's first message was not the ready line")
        loadgen.go()
        generated = loadgen.wait(60 + options.seconds * len(phases) * 3)
        _wait_quiet(lambda: len(events.lines), generated.generated, time.monotonic() + 20)
        child.send_signal(signal.SIGINT)
        result = out.message(time.monotonic() + 60, "the report")["result"]
        child.stdin.close()
        child.wait(60)
        if contender.fifo:
            os.write(fifo_fd, b"end\n")
        events.join(10)
        out.join(10)
    finally:
        loadgen.kill()
        if child.poll() is None:
            child.kill()
            child.wait()
        if fifo_fd >= 0:
            os.close(fifo_fd)
        fifo.unlink(missing_ok=True)
    stamps = (_timestamps_ndjson if contender.fifo else _timestamps_stdout)(events.lines)
    by_rate: dict[str, dict[str, Any]] = {}
    for (count, rate), (start, end) in zip(phases, generated.phases, strict=True):
        latencies = [(at - ts) / 1e6 for at, ts in stamps if start <= ts <= end]
        by_rate[_rate_key(rate)] = {"generated": count, "latencies_ms": latencies}
    dropped = {k: int(v) for k, v in result.get("dropped", {}).items()}
    return {
        "generated": generated.generated,
        "arrived": len(stamps),
        "dropped": sum(dropped.values()),
        "dropped_by": dropped,
        "rates": by_rate,
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` of the way through (nearest rank)."""
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil
    return sorted_values[int(rank) - 1]


def summarize_latency(runs: list[dict[str, Any]], rates: Sequence[float]) -> dict[str, Any]:
    """p50, p99 and max by rate, over every round's events."""
    good = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "failed": len(runs) - len(good),
        "errors": [r["error"] for r in runs if "error" in r],
        "dropped": sum(r["dropped"] for r in good),
        "rates": {},
    }
    for rate in rates:
        key = _rate_key(rate)
        values = sorted(v for r in good for v in r["rates"][key]["latencies_ms"])
        entry: dict[str, Any] = {
            "generated": sum(r["rates"][key]["generated"] for r in good),
            "arrived": len(values),
            "p50_ms": statistics.median(values) if values else None,
            "p99_ms": _percentile(values, 0.99) if values else None,
            "max_ms": values[-1] if values else None,
        }
        summary["rates"][key] = entry
    return summary


def run_latency(
    options: LatencyOptions, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Every selected latency contender, ``options.rounds`` times."""
    chosen = [c for c in LATENCY_CONTENDERS if not options.only or c.name in options.only]
    unknown = set(options.only) - {c.name for c in LATENCY_CONTENDERS}
    if unknown:
        raise SystemExit(f"unknown latency contenders: {', '.join(sorted(unknown))}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch = options.results / "scratch"
    logs = options.results / "logs" / f"latency-{stamp}"
    scratch.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    binary = build(options.results / "build")
    info = machine()
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in chosen}
    for round_ in range(options.rounds):
        shift = round_ % max(1, len(chosen))
        for contender in chosen[shift:] + chosen[:shift]:
            log = logs / f"{contender.name}-{round_ + 1}.log"
            try:
                run = run_one(contender, binary, options, scratch, log)
            except (Failed, OSError, RuntimeError, subprocess.SubprocessError) as exc:
                run = {"error": f"{exc} (log: {log})"}
            runs[contender.name].append(run)
            if "error" in run:
                progress(f"  {contender.name}: FAILED: {run['error']}")
            else:
                progress(
                    f"  {contender.name}: {run['arrived']} of {run['generated']} arrived,"
                    f" {run['dropped']} counted as lost"
                )
    info["loadavg_after"] = os.getloadavg()
    return {
        "command": " ".join([".venv/bin/python -m bench", *sys.argv[1:]]),
        "when": stamp,
        "options": {
            "seconds": options.seconds,
            "rates": list(options.rates),
            "rounds": options.rounds,
        },
        "machine": info,
        "contenders": {c.name: c.what for c in chosen},
        "summary": {name: summarize_latency(r, options.rates) for name, r in runs.items()},
        "runs": runs,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render_latency(result: dict[str, Any]) -> list[str]:
    """The latency table and the targets, as text."""
    from bench.report import _table

    options = result["options"]
    info = result["machine"]
    lines = [
        f"$ {result['command']}",
        f"latency: getppid() event (kernel timestamp) to its line read from the sink's output;"
        f" {options['seconds']:g} s per rate, {options['rounds']} round(s)",
        f"flowtrace {info.get('commit') or '?'}"
        + (" with uncommitted changes" if info.get("uncommitted_changes") else "")
        + f"; {info['cpus']} CPUs, kernel {info['kernel']}, "
        f"load {info['loadavg'][0]:.2f} before / {info['loadavg_after'][0]:.2f} after",
        "",
    ]
    rows = []
    summary: dict[str, dict[str, Any]] = result["summary"]
    for name, s in summary.items():
        for key, entry in s["rates"].items():
            rows.append(
                [
                    name,
                    f"{float(key):,.0f}",
                    f"{entry['generated']:,}",
                    f"{entry['arrived']:,}",
                    _ms(entry["p50_ms"]),
                    _ms(entry["p99_ms"]),
                    _ms(entry["max_ms"]),
                ]
            )
        if s["failed"]:
            rows.append([name, "", "", f"{s['failed']} run(s) failed", "", "", ""])
    header = ["contender", "rate/s", "events", "arrived", "p50 ms", "p99 ms", "max ms"]
    lines += _table(header, rows)
    lost = {name: s["dropped"] for name, s in summary.items() if s["dropped"]}
    if lost:
        lines += ["", "counted as lost: " + ", ".join(f"{n} {v:,}" for n, v in lost.items())]
    for s in summary.values():
        lines += [f"  {error}" for error in s["errors"]]
    lines += ["", f"targets: p50 <= 5 ms, p99 <= 20 ms, p50 <= 2x {BASELINE}'s p50"]
    base = summary.get(BASELINE, {}).get("rates", {})
    for name in ("ft-console", "ft-console-perf", "ft-console-0", "ft-ndjson"):
        for rate in TARGET_RATES if name in summary else ():
            entry = summary[name]["rates"].get(_rate_key(rate))
            if entry is None:
                continue
            p50, p99 = entry["p50_ms"], entry["p99_ms"]
            theirs = base.get(_rate_key(rate), {}).get("p50_ms")
            ratio = p50 / theirs if p50 is not None and theirs else None
            checks = [
                f"p50 {_ms(p50)} ms {_met(p50 is not None and p50 <= 5)}",
                f"p99 {_ms(p99)} ms {_met(p99 is not None and p99 <= 20)}",
                f"{_ms(ratio)}x {_met(ratio is not None and ratio <= 2)}",
            ]
            lines.append(f"  {name:<15} at {rate:>5,.0f}/s: " + ", ".join(checks))
    return lines
