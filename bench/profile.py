"""Where a flowtrace contender's consumer CPU goes, per event.

    .venv/bin/python -m bench.profile [-n 3000000] [--contender ft-count]

Runs one contender against the load generator like the harness does, with
py-spy (``pip install py-spy``) attached after the contender is ready, so
only the consuming phase is sampled (not imports or the compile). Each
sample is put in one category by its innermost recognized frame, and the
table shows each category's share of the samples and its cost per
delivered event (the contender's measured consumer CPU split by those
shares). The raw collapsed stacks stay in bench/results/ for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import linecache
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import CONTENDERS, RESULTS, Child, Failed, _collect_child
from bench.loadgen import Loadgen, build

__all__ = ["categorize", "main"]

# (category, predicate over (function, file, source line)), first match wins,
# tried from the innermost frame outwards.
_RULES: list[tuple[str, str, str, str]] = [
    # category, function contains, file ends with, source line contains
    ("string decoding (comm)", "_c_string", "", ""),
    ("string decoding (comm)", "_decode_strings", "", ""),
    ("numpy -> Python lists (tolist)", "decode", "flowtrace/events.py", ".tolist()"),
    ("msgspec Struct construction", "decode", "flowtrace/events.py", "map(self.event"),
    ("string decoding (comm)", "decode", "flowtrace/events.py", "_c_string"),
    ("other decode", "decode", "flowtrace/events.py", ""),
    (
        "ring buffer read (positions, header scan, numpy views)",
        "read",
        "flowtrace/transport.py",
        "",
    ),
    ("operators", "process", "bench/ops.py", ""),
    ("operators", "<lambda>", "bench/contenders/", ""),
    ("operators", "", "flowtrace/operators/", ""),
    ("operators", "_run_operator", "flowtrace/runtime.py", "op.process"),
    ("sink", "write", "bench/ops.py", ""),
    ("sink", "", "sinks/", ""),
    ("kernel lost counter read (bcc map, per wake-up)", "lost", "flowtrace/kernel_source.py", ""),
    ("waiting for the fd (wait_readable, cancel scope)", "wait_readable", "", ""),
    ("waiting for the fd (wait_readable, cancel scope)", "_woken_by_stop", "", ""),
    ("source loop", "_pump", "flowtrace/kernel_source.py", ""),
    ("pipeline edges and tasks", "", "anyio/streams/memory.py", ""),
    ("pipeline edges and tasks", "", "flowtrace/runtime.py", ""),
    ("event loop: waiting (epoll) ", "select", "selectors.py", ""),
    ("event loop and anyio", "", "asyncio/", ""),
    ("event loop and anyio", "", "anyio/", ""),
]


def _frame(text: str) -> tuple[str, str, int]:
    """``func (path:line)`` as py-spy writes a frame."""
    func, _, rest = text.partition(" (")
    path, _, line = rest.rstrip(")").rpartition(":")
    return func, path, int(line) if line.isdigit() else 0


def categorize(stack: list[str]) -> str:
    """The category of one sample, from its frames (outermost first)."""
    for text in reversed(stack):
        func, path, line = _frame(text)
        source = linecache.getline(path, line) if line else ""
        for category, want_func, want_file, want_line in _RULES:
            if want_func and want_func not in func:
                continue
            if want_file and want_file not in path:
                continue
            if want_line and want_line not in source:
                continue
            return category
    return "other: " + (stack[-1] if stack else "?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=3_000_000)
    parser.add_argument(
        "--contender",
        default="ft-count",
        choices=[c.name for c in CONTENDERS if c.engine != "bpftrace"],
    )
    parser.add_argument(
        "--events-per-s",
        type=float,
        default=0.0,
        help="pace the load generator (default: as fast as it can)",
    )
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")
    contender = next(c for c in CONTENDERS if c.name == args.contender)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = RESULTS / f"profile-{contender.name}-{stamp}.txt"
    binary = build(RESULTS / "build")
    loadgen = Loadgen(binary, args.count, args.events_per_s)
    child = Child(contender.argv(loadgen.pid, RESULTS), RESULTS / f"profile-{stamp}.log")
    spy: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 180
        while (line := child.line(deadline, "ready")[1]) is not None and '"ready"' not in line:
            pass
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(child.pid),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)  # py-spy attaches
        cpu_go = child.cpu_s() or 0.0
        loadgen.go()
        loadgen.wait(3600)
        child.interrupt()
        _, result = _collect_child(child, time.monotonic() + 600)
        cpu = (child.cpu_s() or 0.0) - cpu_go
        child.reap(60)
        spy.wait(60)
    except Failed as exc:
        print(f"profile failed: {exc}", file=sys.stderr)
        return 1
    finally:
        loadgen.kill()
        child.kill()
        if spy is not None and spy.poll() is None:
            spy.terminate()
    if result.get("output"):
        Path(result["output"]).unlink(missing_ok=True)
    delivered = int(result["delivered"])
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, samples = line.rpartition(" ")
        frames = stack_text.split(";")
        if not any("run (flowtrace/runtime.py" in f or "runtime.py" in f for f in frames):
            continue  # not the pipeline (py-spy's idle samples, other threads)
        counts[categorize(frames[2:])] += int(samples)
    total = sum(counts.values())
    per_event = cpu / delivered * 1e6 if delivered else 0.0
    print(
        f"{contender.name}: {delivered:,} events delivered, consumer CPU {cpu:.3f} s "
        f"= {per_event:.3f} us/event (under py-spy at {args.rate} Hz, so higher than unprofiled)"
    )
    print(f"{total} samples in the pipeline; raw stacks: {raw}\n")
    print(f"{'where':<56} {'share':>6} {'us/event':>9}")
    for category, n in counts.most_common():
        print(f"{category[:56]:<56} {n / total:>6.1%} {per_event * n / total:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
