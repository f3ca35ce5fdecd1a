"""Running every contender against the same workload and measuring it.

One run of a contender:

1. start the load generator (it waits for a go line) and the contender
   with the generator's pid; start-up is the wall time from starting the
   contender's process to its ready line (interpreter, imports, compile,
   attach);
2. read the contender's CPU clock, release the generator, wait until it
   has made its N syscalls and exited; its own loop time against an
   untraced run of the same N is the slowdown;
3. send the contender SIGINT; it detaches, drains and reports; the wall
   time from the generator's exit to that report is the drain time, and
   the contender's CPU time between the go and the report is the consumer
   CPU;
4. let it exit; its peak RSS is the high-water mark of its own memory map
   (``VmHWM``, sampled while it runs and after it reports).

Every contender runs in its own process, so its CPU time and peak RSS are
its own. Contenders run in turns, in a rotated order each round, with an
untraced run in every round; the summary is the median over rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
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

from bench.loadgen import Loadgen, build
from bench.workload import LOADGEN_COMM, TRACEPOINT, TSLOW_MASK

__all__ = ["CONTENDERS", "Contender", "Options", "run_benchmark"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

BASELINE = "bcc-perf"
"""The tutorial-style perf-buffer loop: the plain bcc program every ratio is against."""


@dataclass(frozen=True)
class Options:
    count: int = 1_000_000
    rate: float = 0.0
    rounds: int = 3
    only: tuple[str, ...] = ()
    results: Path = RESULTS


@dataclass(frozen=True)
class Contender:
    """One way of answering the question, run in its own process.

    ``answer`` is ``count`` (events by comm), ``hist`` (log2 buckets) or
    ``ndjson`` (lines in a file). ``engine`` says whose code consumes.
    """

    name: str
    what: str
    engine: str
    answer: str
    module: str = ""
    bpftrace: str = ""
    extra: tuple[str, ...] = ()

    def argv(self, pid: int, scratch: Path) -> list[str]:
        if self.engine == "bpftrace":
            program = 'BEGIN { printf("ready\\n"); }\n' + self.bpftrace.format(pid=pid)
            return ["bpftrace", "-B", "none", "-f", "json", "-e", program]
        argv = [sys.executable, "-m", self.module, str(pid), *self.extra]
        if self.answer == "ndjson":
            argv.append(str(scratch / f"{self.name}.ndjson"))
        return argv

    def available(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.engine == "bpftrace" and shutil.which("bpftrace") is None:
            return "bpftrace is not installed (apt-get install bpftrace)"
        return None


_TP = ":".join(TRACEPOINT)

CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "ft-count",
        "flowtrace: tracepoint -> filter pid -> count by comm, in Python",
        "flowtrace",
        "count",
        module="bench.contenders.ft_count",
    ),
    Contender(
        "ft-count-kernel",
        "flowtrace: ft-count, filter and count placed in the kernel by the planner",
        "flowtrace",
        "count",
        module="bench.contenders.ft_count",
        extra=("--kernel",),
    ),
    Contender(
        "ft-ndjson",
        "flowtrace: every event to an NDJSON file",
        "flowtrace",
        "ndjson",
        module="bench.contenders.ft_ndjson",
    ),
    Contender(
        "ft-hist",
        "flowtrace: log2 histogram of a field, in Python",
        "flowtrace",
        "hist",
        module="bench.contenders.ft_hist",
    ),
    Contender(
        "ft-hist-kernel",
        "flowtrace: ft-hist, the histogram placed in the kernel by the planner",
        "flowtrace",
        "hist",
        module="bench.contenders.ft_hist",
        extra=("--kernel",),
    ),
    Contender(
        "ft-count-perf",
        "flowtrace: ft-count on its perf-buffer transport (the fallback)",
        "flowtrace",
        "count",
        module="bench.contenders.ft_count",
        extra=("--perf",),
    ),
    Contender(
        "bcc-perf",
        "plain bcc, tutorial style: perf buffer, callback, .event(), count",
        "bcc",
        "count",
        module="bench.contenders.bcc_perf",
    ),
    Contender(
        "bcc-ringbuf",
        "plain bcc, tutorial style: ring buffer, callback, .event(), count",
        "bcc",
        "count",
        module="bench.contenders.bcc_ringbuf",
    ),
    Contender(
        "bpftrace-count",
        "bpftrace: count by comm in the kernel",
        "bpftrace",
        "count",
        bpftrace=f"tracepoint:{_TP} /pid == {{pid}}/ {{{{ @[comm] = count(); }}}}",
    ),
    Contender(
        "bpftrace-hist",
        "bpftrace: log2 histogram of the same field in the kernel",
        "bpftrace",
        "hist",
        bpftrace=f"tracepoint:{_TP} /pid == {{pid}}/ {{{{ @ = hist(nsecs & {TSLOW_MASK:#x}); }}}}",
    ),
)


class Failed(Exception):
    """A run that did not complete; the message says where it stopped."""


class Child:
    """A contender's process: its stdout lines, timestamped as they arrive."""

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        self._log = log.open("w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
            text=True,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.peak_rss_kib = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch_rss, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put((time.monotonic(), line))
        self._lines.put((time.monotonic(), None))

    def _watch_rss(self) -> None:
        """Sample the process's own high-water RSS until it exits.

        ``VmHWM`` belongs to the memory map the program got at exec. The
        ``ru_maxrss`` that ``wait4`` reports does not: Linux folds the RSS of
        the parent it was forked from into it, so a harness that once grew
        (reading a large NDJSON file back) would inflate every later child.
        """
        status = Path(f"/proc/{self.pid}/status")
        while self.process.returncode is None:
            self.sample_rss(status)
            time.sleep(0.01)

    def sample_rss(self, status: Path | None = None) -> None:
        try:
            text = (status or Path(f"/proc/{self.pid}/status")).read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def line(self, deadline: float, waiting_for: str) -> tuple[float, str | None]:
        """The next stdout line and when it arrived (None at end of output)."""
        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Failed(f"timed out waiting for {waiting_for}") from None

    def cpu_s(self) -> float | None:
        """CPU time of the whole process so far (every thread, live or exited)."""
        try:
            return time.clock_gettime((~self.pid << 3) | 2)  # the pid's CPUCLOCK_SCHED clock
        except OSError:
            return None

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def reap(self, timeout: float) -> Any:
        """Close stdin, wait for the exit, and return its rusage."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.process.returncode = os.waitstatus_to_exitcode(status)
                self._log.close()
                return rusage
            if time.monotonic() > deadline:
                raise Failed("did not exit after reporting")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _child_protocol_ready(line: str) -> bool:
    return bool(json.loads(line).get("ready"))


def _bpftrace_ready(line: str) -> bool:
    message = json.loads(line) if line.startswith("{") else {}
    return message.get("type") == "printf" and message.get("data") == "ready\n"


def _collect_child(child: Child, deadline: float) -> tuple[float, dict[str, Any]]:
    while True:
        at, line = child.line(deadline, "the report")
        if line is None:
            raise Failed("exited without a report")
        message = json.loads(line)
        if "result" in message:
            return at, message["result"]


def _collect_bpftrace(child: Child, deadline: float, answer: str) -> tuple[float, dict[str, Any]]:
    """bpftrace prints its maps at exit: read them until end of output."""
    table: dict[str, int] = {}
    last = 0.0
    while True:
        at, line = child.line(deadline, "bpftrace's maps")
        if line is None:
            break
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("type") == "map":
            for values in message["data"].values():
                table.update({str(k): int(v) for k, v in values.items()})
            last = at
        elif message.get("type") == "hist":
            for buckets in message["data"].values():
                for bucket in buckets:
                    table[f"{bucket['min']}-{bucket['max']}"] = int(bucket["count"])
            last = at
    if not last:
        raise Failed("bpftrace printed no map")
    delivered = table.get(LOADGEN_COMM, 0) if answer == "count" else sum(table.values())
    return last, {"delivered": delivered, "dropped": {}, "answer": table}


def _count_lines(path: Path) -> tuple[int, bool]:
    """Events in an NDJSON file (lines of type ``event``, or every line when
    lines carry no type), and whether every line is a whole JSON object."""
    events = 0
    valid = True
    decoder = msgspec.json.Decoder()
    with path.open("rb") as f:
        tail = b""
        while chunk := f.read(1 << 20):
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            whole, tail = data[:cut], data[cut:]
            try:
                objects = decoder.decode_lines(whole)
            except msgspec.DecodeError:
                valid = False
                continue
            valid = valid and all(isinstance(o, dict) for o in objects)
            events += sum(
                1 for o in objects if isinstance(o, dict) and o.get("type", "event") == "event"
            )
    return events, valid and not tail


def _answer_ok(contender: Contender, result: dict[str, Any], delivered: int) -> bool:
    answer: dict[str, int] = result.get("answer", {})
    if contender.answer == "count":
        return answer == {LOADGEN_COMM: delivered}
    if contender.answer == "hist":
        highs = [int(bucket.partition("-")[2]) for bucket in answer]
        return sum(answer.values()) == delivered and all(0 <= h <= TSLOW_MASK for h in highs)
    return bool(result.get("valid_lines"))


def run_contender(
    contender: Contender, binary: Path, options: Options, scratch: Path, log: Path
) -> dict[str, Any]:
    """One run of ``contender`` against a fresh load generator: raw measurements."""
    n = options.count
    generous = 120.0 + n * 50e-6
    loadgen = Loadgen(binary, n, options.rate)
    child = Child(contender.argv(loadgen.pid, scratch), log)
    bpftrace = contender.engine == "bpftrace"
    is_ready: Callable[[str], bool] = _bpftrace_ready if bpftrace else _child_protocol_ready
    try:
        deadline = time.monotonic() + 180
        while True:
            at, line = child.line(deadline, "the ready line")
            if line is None:
                raise Failed(f"exited before it was ready (see {log})")
            if is_ready(line):
                break
        startup = at - child.started
        cpu_go = child.cpu_s()
        if cpu_go is None:
            raise Failed("could not read its CPU clock")
        loadgen.go()
        generated = loadgen.wait(generous)
        workload_end = time.monotonic()
        child.interrupt()
        if bpftrace:
            reported_at, result = _collect_bpftrace(
                child, time.monotonic() + generous, contender.answer
            )
            cpu_done = None
        else:
            reported_at, result = _collect_child(child, time.monotonic() + generous)
            cpu_done = child.cpu_s()
            child.sample_rss()
        rusage = child.reap(60)
    finally:
        loadgen.kill()
        child.kill()
    total_cpu = rusage.ru_utime + rusage.ru_stime
    consumer_cpu = (cpu_done if cpu_done is not None else total_cpu) - cpu_go
    delivered = int(result["delivered"])
    if contender.answer == "ndjson":
        path = Path(result["output"])
        lines, result["valid_lines"] = _count_lines(path)
        if lines != delivered:
            result.setdefault("notes", []).append(
                f"the sink said {delivered} written, the file has {lines} events"
            )
        delivered = lines
        path.unlink()
    dropped: dict[str, int] = {k: int(v) for k, v in result.get("dropped", {}).items()}
    return {
        "generated": generated.generated,
        "delivered": delivered,
        "dropped": sum(dropped.values()),
        "dropped_by": dropped,
        "adds_up": delivered + sum(dropped.values()) == generated.generated,
        "answer_ok": _answer_ok(contender, result, delivered),
        "answer": result.get("answer"),
        "consumer_cpu_s": consumer_cpu,
        "cpu_per_event_us": consumer_cpu / delivered * 1e6 if delivered else None,
        "events_per_cpu_s": delivered / consumer_cpu if consumer_cpu > 0 else None,
        "drain_s": reported_at - workload_end,
        "loop_s": generated.loop_s,
        "startup_s": startup,
        "peak_rss_mib": child.peak_rss_kib / 1024,
        "total_cpu_s": total_cpu,
        "notes": result.get("notes", []),
        "stages": result.get("stages", []),
    }


def run_untraced(binary: Path, options: Options) -> float:
    """The load generator's loop time with nothing attached."""
    loadgen = Loadgen(binary, options.count, options.rate)
    try:
        loadgen.go()
        return loadgen.wait(120.0 + options.count * 50e-6).loop_s
    finally:
        loadgen.kill()


NUMERIC = (
    "generated",
    "delivered",
    "dropped",
    "consumer_cpu_s",
    "cpu_per_event_us",
    "events_per_cpu_s",
    "drain_s",
    "loop_s",
    "slowdown",
    "startup_s",
    "peak_rss_mib",
    "total_cpu_s",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the successful runs; accounting must hold in every run."""
    good = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "failed": len(runs) - len(good),
        "adds_up": bool(good) and all(r["adds_up"] for r in good),
        "answer_ok": bool(good) and all(r["answer_ok"] for r in good),
        "notes": sorted(
            {n for r in good for n in r["notes"]} | {r["error"] for r in runs if "error" in r}
        ),
    }
    for key in NUMERIC:
        values = [r[key] for r in good if r.get(key) is not None]
        summary[key] = statistics.median(values) if values else None
        if len(values) > 1:
            summary[key + "_range"] = [min(values), max(values)]
    if good:
        summary["dropped_by"] = {
            k: statistics.median(r["dropped_by"].get(k, 0) for r in good)
            for k in sorted({k for r in good for k in r["dropped_by"]})
        }
    return summary


def add_ratios(summaries: dict[str, dict[str, Any]]) -> None:
    """Each contender against the tutorial-style perf loop (the plain bcc program)."""
    base = summaries.get(BASELINE)
    for summary in summaries.values():
        ratios: dict[str, float | None] = {}
        for key in ("cpu_per_event_us", "events_per_cpu_s", "startup_s", "peak_rss_mib"):
            mine = summary.get(key)
            theirs = base.get(key) if base else None
            ratios[key] = mine / theirs if mine is not None and theirs else None
        summary["vs_" + BASELINE.replace("-", "_")] = ratios


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }
    try:
        import bcc

        info["bcc"] = getattr(bcc, "__version__", "?")
    except ImportError:
        info["bcc"] = None
    if shutil.which("bpftrace"):
        out = subprocess.run(["bpftrace", "-V"], capture_output=True, text=True)
        info["bpftrace"] = out.stdout.strip()
    info["commit"] = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    info["uncommitted_changes"] = None if status is None else bool(status)
    return info


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository, or None."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def run_benchmark(
    options: Options, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Every selected contender, ``options.rounds`` times; raw runs and summaries."""
    chosen = [c for c in CONTENDERS if not options.only or c.name in options.only]
    unknown = set(options.only) - {c.name for c in CONTENDERS}
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")
    skipped = {c.name: why for c in chosen if (why := c.available()) is not None}
    chosen = [c for c in chosen if c.name not in skipped]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch = options.results / "scratch"
    logs = options.results / "logs" / stamp
    scratch.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    binary = build(options.results / "build")
    info = machine()
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in chosen}
    untraced: list[float] = []
    for round_ in range(options.rounds):
        untraced.append(run_untraced(binary, options))
        progress(f"round {round_ + 1}/{options.rounds}: untraced loop {untraced[-1]:.3f} s")
        shift = round_ % max(1, len(chosen))
        for contender in chosen[shift:] + chosen[:shift]:
            log = logs / f"{contender.name}-{round_ + 1}.log"
            try:
                run = run_contender(contender, binary, options, scratch, log)
            except Failed as exc:
                run = {"error": f"{exc} (log: {log})"}
            runs[contender.name].append(run)
            progress(f"  {contender.name}: " + _progress_line(run))
    base_loop = statistics.median(untraced)
    for contender_runs in runs.values():
        for run in contender_runs:
            if "error" not in run:
                run["slowdown"] = run["loop_s"] / base_loop
    summaries = {name: summarize(r) for name, r in runs.items()}
    add_ratios(summaries)
    info["loadavg_after"] = os.getloadavg()
    return {
        "command": " ".join([".venv/bin/python -m bench", *sys.argv[1:]]),
        "when": stamp,
        "options": {"count": options.count, "rate": options.rate, "rounds": options.rounds},
        "machine": info,
        "untraced_loop_s": untraced,
        "contenders": {c.name: {"what": c.what, "engine": c.engine} for c in chosen},
        "skipped": skipped,
        "summary": summaries,
        "runs": runs,
    }


def _progress_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return "FAILED: " + str(run["error"])
    per = run["cpu_per_event_us"]
    return (
        f"{run['delivered']} delivered, {run['dropped']} dropped, "
        f"{'adds up' if run['adds_up'] else 'DOES NOT ADD UP'}, "
        + (f"{per:.3f} us/event" if per is not None else "no events")
    )
