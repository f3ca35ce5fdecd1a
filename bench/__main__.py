"""``python -m bench``: run the benchmark, print the tables, write the JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.harness import CONTENDERS, RESULTS, Options, run_benchmark
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
        default=3,
        help="runs of every contender; the tables show medians (default: 3)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated contenders: " + ", ".join(c.name for c in CONTENDERS),
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
    if args.count < 1 or args.rounds < 1:
        parser.error("--count and --rounds must be positive")
    options = Options(
        count=args.count,
        rate=args.rate,
        rounds=args.rounds,
        only=tuple(filter(None, args.only.split(","))),
        results=args.results.resolve(),
    )

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = run_benchmark(options, progress)
    path = options.results / f"bench-{result['when']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (options.results / "latest.json").write_text(path.read_text())
    print("\n".join(render(result)))
    print(f"\nJSON: {path}")
    return 0 if all(s["adds_up"] for s in result["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
