"""Lesson 20, http_filter: HTTP requests picked out in the kernel by a socket filter.

    flowtrace run pipelines/http_filter.py INTERFACE [NETNS]

After bcc's examples/networking/http_filter: a BPF_PROG_TYPE_SOCKET_FILTER
program on a raw socket bound to INTERFACE (of network namespace NETNS,
as ip netns names it) passes only packets carrying an HTTP request line to
user space, which prints each request's method and path and, on Ctrl-C,
counts them.

    $ flowtrace run pipelines/http_filter.py ft2accb4s ft-2accb4-s     # 5 requests to its server
    SADDR:SPORT            DADDR:DPORT            METHOD  PATH
    10.200.0.1:46554       10.200.0.2:8080        GET     /index.html
    10.200.0.1:46562       10.200.0.2:8080        POST    /form
    10.200.0.1:46576       10.200.0.2:8080        GET     /index.html
    10.200.0.1:46584       10.200.0.2:8080        HEAD    /x
    10.200.0.1:46586       10.200.0.2:8080        GET     /index.html
    ^C
    METHOD PATH        COUNT
    GET    /index.html     3
    POST   /form           1
    HEAD   /x              1
"""

from collections import Counter
from typing import Any

from flowtrace import Pipeline
from flowtrace.errors import AttachError, KernelUnreadable, PipelineFileError
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


def pipeline(interface: str, netns: str | None = None) -> Pipeline:
    """Each HTTP request arriving on INTERFACE, and on Ctrl-C their counts.

    Args:
        interface: the network interface to watch
        netns: its network namespace, as ip netns names it (default: this one)
    """
    source = http_requests(interface, netns=netns or "")
    try:
        source.plan()
    except KernelUnreadable:
        pass  # not root: a replay needs no kernel, and a run says why it cannot attach
    except AttachError as exc:
        raise PipelineFileError(f"http_filter.py: {exc}") from None
    return source | AndCounted() | ConsoleSink(columns)
