"""``python -m bench``: run the benchmark, print the tables, write the JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import CONTENDERS, RESULTS, Options, run_benchmark
from bench.latency import (
    LATENCY_CONTENDERS,
    RATES,
    LatencyOptions,
    render_latency,
    run_latency,
)
from bench.report import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="flowtrace against the tutorial's bcc loops and bpftrace, side by side. "
        "Run as root from the repository root.",
    )
    parser.add_argument(
        "-n",
        "--count",
        type=int,
        default=1_000_000,
        help="getppid() calls per run (default: 1,000,000)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events per second (default: as fast as possible)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="runs of every contender; the tables show medians (default: 3; with --latency 1)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated contenders: "
        + ", ".join(c.name for c in CONTENDERS)
        + "; with --latency: "
        + ", ".join(c.name for c in LATENCY_CONTENDERS),
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="measure event-to-sink latency at 10, 1,000 and 100,000 events/s instead",
    )
    parser.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in RATES),
        help="with --latency: comma-separated events per second of the phases"
        " (default: 10,1000,100000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="with --latency: seconds at each rate (default: 2)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON, logs and the load generator go (default: bench/results)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("attaching BPF programs needs root")
    rounds = args.rounds if args.rounds is not None else 1 if args.latency else 3
    if args.count < 1 or rounds < 1 or not args.seconds > 0:
        parser.error("--count, --rounds and --seconds must be positive")
    only = tuple(filter(None, args.only.split(",")))
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        parser.error(f"--rates takes numbers separated by commas, not {args.rates!r}")
    if not all(0 < r < float("inf") for r in rates):
        parser.error(f"--rates must be positive events per second: {args.rates}")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.latency:
        return latency(
            LatencyOptions(
                args.seconds, rates, rounds=rounds, only=only, results=args.results.resolve()
            ),
            progress,
        )
    options = Options(
        count=args.count,
        rate=args.rate,
        rounds=rounds,
        only=only,
        results=args.results.resolve(),
    )
    result = run_benchmark(options, progress)
    publish(result, options.results, "bench", "latest", render(result))
    return 0 if all(s["adds_up"] for s in result["summary"].values()) else 1


def latency(options: LatencyOptions, progress: Callable[[str], None]) -> int:
    """The latency table; exit status 1 when a run failed."""
    result = run_latency(options, progress)
    publish(result, options.results, "latency", "latest-latency", render_latency(result))
    return 0 if not any(s["failed"] for s in result["summary"].values()) else 1


def publish(
    result: dict[str, Any], results: Path, kind: str, latest: str, table: list[str]
) -> None:
    """Write ``result`` as ``KIND-WHEN.json`` and ``LATEST.json`` in ``results``,
    then print ``table`` and where the JSON is."""
    path = results / f"{kind}-{result['when']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (results / f"{latest}.json").write_text(path.read_text())
    print("\n".join(table))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    sys.exit(main())
