"""Fleet-wide disk latency per 10 s, and the 3 worst hosts.

Every host runs the agent (as root), which publishes its disk latency
histogram of each 10 s to NATS JetStream on ``flowtrace.<host>.disk``:

    $ flowtrace run --sink nats:nats://nats1:4222 pipelines/fleet_disklatency.py:agent

A collector reads them all through a durable consumer and merges them per
10 s of wall-clock time, printing the fleet's histogram and the three hosts
with the slowest 99th percentile:

    $ flowtrace run pipelines/fleet_disklatency.py:collector nats://nats1:4222
         usecs               : count     distribution
            16 -> 31         : 12       |***                                     |
            32 -> 63         : 141      |****************************************|
            64 -> 127        : 97       |***************************             |
           128 -> 255        : 8        |**                                      |
    worst_hosts lat_ns: [{"host": "db2", "p99": 255, "count": 40}, ...]

See docs/fleet.md for the topology, the NATS cluster and the guarantees.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flowtrace.operators import Tumbling, log2_histogram, merge_by
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.sources.disk import disk_requests
from flowtrace.sources.nats import nats_source
from flowtrace.stages import Pipeline, Sink


def agent(args: Sequence[str]) -> Pipeline:
    """``[SECONDS]``: this host's latency histogram every SECONDS (10)."""
    seconds = float(args[0]) if args else 10.0
    every = Tumbling(seconds)
    return (
        disk_requests()
        | log2_histogram("lat_ns", unit="usecs", divisor=1000, every=every)
        | ConsoleSink()
    )


def collector(args: Sequence[str]) -> Pipeline:
    """``SERVER... [--window S] [--worst N] [--subject S] [--durable NAME]
    [--ack-wait S] [--out FILE.ndjson]``."""
    parser = argparse.ArgumentParser(prog="fleet_disklatency.py:collector")
    parser.add_argument("servers", nargs="+", help="nats://HOST:PORT of the JetStream cluster")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per fleet window")
    parser.add_argument("--worst", type=int, default=3, help="how many worst hosts to list")
    parser.add_argument("--subject", default="flowtrace.*.disk", help="agents' subjects")
    parser.add_argument("--durable", default="fleet_disklatency", help="consumer name")
    parser.add_argument("--ack-wait", type=float, default=30.0, help="seconds before redelivery")
    parser.add_argument("--lateness", type=float, default=10.0, help="see merge_by")
    parser.add_argument("--max-wait", type=float, default=60.0, help="see merge_by")
    parser.add_argument("--out", help="write NDJSON records here instead of printing")
    opts = parser.parse_args(list(args))
    sink: Sink[object] = NdjsonSink(opts.out, reports=False) if opts.out else ConsoleSink()
    return (
        nats_source(opts.servers, opts.subject, durable=opts.durable, ack_wait=opts.ack_wait)
        | merge_by(
            window=Tumbling(opts.window),
            worst=opts.worst,
            lateness=opts.lateness,
            max_wait=opts.max_wait,
        )
        | sink
    )
