"""User statically defined tracing (USDT) probes of applications.

:func:`http_server_requests` follows the tutorial's Node.js lesson: the
``node:http__server__request`` probe, whose sixth argument is the request
path. It works against any process exposing that probe (Node.js built with
``--with-dtrace``, or any program declaring it with ``<sys/sdt.h>``).
:func:`python_gc_starts` uses a probe real distribution binaries carry:
CPython's ``python:gc__start`` (Debian's ``/usr/bin/python3.11``), fired at
the start of every garbage collection.
"""

from __future__ import annotations

from typing import Annotated

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import Char, ktime_ns, s32, task_comm, task_pid
from flowtrace.probes import Param, Probe, Usdt

__all__ = ["GcStart", "HttpRequest", "http_server_requests", "python_gc_starts"]

PATH_BYTES = 128
"""How much of each request path is kept (the tutorial's 128 bytes)."""


class HttpRequest(Event, frozen=True):
    """An HTTP server in process ``pid`` started serving ``path``."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm
    path: Annotated[str, Char(PATH_BYTES)]


class GcStart(Event, frozen=True):
    """A CPython process started collecting ``generation`` (0, 1 or 2)."""

    ts: ktime_ns
    pid: task_pid
    comm: task_comm
    generation: s32


def http_server_requests(pid: int, *, transport: str = "auto") -> KernelSource[HttpRequest]:
    """Requests of the HTTP server in process ``pid``, from its
    ``node:http__server__request`` USDT probe (the path is argument 6)."""
    probe = Probe(
        f"node:http__server__request in process {pid}",
        Usdt("http__server__request", pid=pid, provider="node", arguments=(6,)),
        body="bpf_probe_read_user_str(&e.path, sizeof(e.path), (void *)path);",
        params=[Param("path")],
    )
    return KernelSource(HttpRequest, probe, name="http", transport=transport)


def python_gc_starts(pid: int, *, transport: str = "auto") -> KernelSource[GcStart]:
    """Garbage collections started by the CPython process ``pid``, from its
    ``python:gc__start`` USDT probe (a pid is needed: the probe is enabled by
    a semaphore in the process)."""
    probe = Probe(
        f"python:gc__start in process {pid}",
        Usdt("gc__start", pid=pid, provider="python"),
        body="e.generation = generation;",
        params=[Param("generation", "s32")],
    )
    return KernelSource(GcStart, probe, name="python_gc", transport=transport)
