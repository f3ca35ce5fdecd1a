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

from flowtrace.errors import PipelineFileError
from flowtrace.operators import Tumbling, log2_histogram, merge_by
from flowtrace.sinks.console import ConsoleSink
from flowtrace.sinks.ndjson import NdjsonSink
from flowtrace.sources.disk import disk_requests
from flowtrace.sources.nats import nats_source
from flowtrace.stages import Pipeline, Sink


def agent(seconds: float = 10.0) -> Pipeline:
    """This host's disk latency histogram every SECONDS.

    Args:
        seconds: seconds per histogram
    """
    return (
        disk_requests()
        | log2_histogram("lat_ns", unit="usecs", divisor=1000, every=Tumbling(seconds))
        | ConsoleSink()
    )


pipeline = agent
"""``flowtrace run fleet_disklatency`` runs the agent."""


def collector(
    *servers: str,
    window: float = 10.0,
    worst: int = 3,
    subject: str = "flowtrace.*.disk",
    durable: str = "fleet_disklatency",
    ack_wait: float = 30.0,
    lateness: float = 10.0,
    max_wait: float = 60.0,
    out: str | None = None,
) -> Pipeline:
    """The fleet's latency per WINDOW seconds of wall-clock time, and its worst hosts.

    Args:
        servers: nats://HOST:PORT of the JetStream cluster
        window: seconds per fleet window
        worst: how many worst hosts to list
        subject: the agents' subjects
        durable: the consumer's name
        ack_wait: seconds before JetStream redelivers
        lateness: see merge_by
        max_wait: see merge_by
        out: write NDJSON records here instead of printing
    """
    if not servers:
        raise PipelineFileError("fleet_disklatency.py:collector needs nats://HOST:PORT servers")
    sink: Sink[object] = NdjsonSink(out, reports=False) if out else ConsoleSink()
    return (
        nats_source(list(servers), subject, durable=durable, ack_wait=ack_wait)
        | merge_by(window=Tumbling(window), worst=worst, lateness=lateness, max_wait=max_wait)
        | sink
    )
