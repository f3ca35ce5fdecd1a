"""Lesson 20, http_filter: HTTP requests picked out in the kernel by a socket filter.

    flowtrace run pipelines/http_filter.py INTERFACE [NETNS]

After bcc's examples/networking/http_filter: a BPF_PROG_TYPE_SOCKET_FILTER
program on a raw socket bound to INTERFACE (of network namespace NETNS,
as ip netns names it) passes only packets carrying an HTTP request line to
user space, which prints each request's method and path and, on Ctrl-C,
counts them.

    $ flowtrace run pipelines/http_filter.py veth0 web
PLACEHOLDER
"""

from collections import Counter
from typing import Any

from flowtrace import Pipeline
from flowtrace.errors import PipelineFileError
from flowtrace.operators import EventOperator
from flowtrace.records import CountRow, CountTable
from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.http import HttpRequest, http_requests


class AndCounted(EventOperator[HttpRequest, Any]):
    """Passes each request on; at the end, how often each (method, path) came."""

    def setup(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def on_event(self, event: HttpRequest) -> None:
        self.counts[event.method, event.path] += 1
        self.emit(event)

    def on_end(self) -> None:
        rows = [CountRow({"method": m, "path": p}, n) for (m, p), n in self.counts.most_common()]
        self.emit(CountTable(rows=rows, key_fields=["method", "path"]))


columns: list[Column[HttpRequest]] = [
    Column("SADDR:SPORT", lambda e: f"{e.saddr}:{e.sport}", 22),
    Column("DADDR:DPORT", lambda e: f"{e.daddr}:{e.dport}", 22),
    Column("METHOD", lambda e: e.method, 7),
    Column("PATH", lambda e: e.path),
]


def pipeline(args: list[str]) -> Pipeline:
    if not 1 <= len(args) <= 2 or args[0].startswith("-"):
        raise PipelineFileError(
            f"http_filter.py takes an interface and maybe its network namespace, got"
            f" {' '.join(args)!r}: run flowtrace run pipelines/http_filter.py INTERFACE [NETNS]"
        )
    netns = args[1] if len(args) > 1 else ""
    return http_requests(args[0], netns=netns) | AndCounted() | ConsoleSink(columns)
