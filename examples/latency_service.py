"""An async service embedding a flowtrace pipeline: read(2) latency as a live
log2 histogram, served over HTTP from the same event loop.

    sudo .venv/bin/python examples/latency_service.py --port 8080
    curl http://127.0.0.1:8080/            # the histogram so far, as bcc prints it
    curl http://127.0.0.1:8080/histogram   # the same as JSON (flowtrace schema)
    curl http://127.0.0.1:8080/stats       # the pipeline's counters

    # no root, no bcc: from a recording made with
    #   flowtrace run --record reads.rec pipelines/vfsreadlat.py
    .venv/bin/python examples/latency_service.py --replay reads.rec

At most ``--max-connections`` (default 256) connections are served at once;
more wait in the kernel's listen queue until one closes. A connection that
sends no whole request within ``--request-timeout`` seconds (default 10)
gets ``408 Request Timeout`` and is closed, so idle connections cannot keep
others waiting for long. When the process
runs out of file descriptors (EMFILE under a low ``ulimit -n``), the
server says so once on stderr and waits for connections to close, then
serves on; it never exits for it.

The pipeline is ``read_latencies() | log2_histogram(every=Tumbling(1)) | Accumulate()``:
the operator emits one histogram per second, the sink adds them up, and the
HTTP handlers read the sink. Ctrl-C or SIGTERM stops the pipeline (probes
detached), then the server; exit 0. An error (a pipeline that cannot start,
a port in use, a bad recording) is one line on stderr and exit status 2; a
pipeline failing while serving stops the service with exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import signal
import sys
from collections.abc import Callable
from typing import Any, cast

import anyio
import msgspec
from anyio.abc import SocketListener, SocketStream, TaskStatus

from flowtrace import FlowtraceError, Pipeline, Run, Sink, StageContext
from flowtrace.operators import Tumbling, log2_histogram
from flowtrace.records import Bucket, EmptyWindows, Histogram, Record
from flowtrace.render import histogram_lines
from flowtrace.replay import replay
from flowtrace.schema import envelope, summary
from flowtrace.sources.reads import read_latencies

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Accumulate", "LatencyService", "latency_pipeline", "main", "render"]

_JSON = msgspec.json.Encoder()


class Accumulate(Sink[Record]):
    """Adds up the histograms it receives (one per window) into :attr:`counts`,
    one counter per bucket; holds nothing else. :meth:`histogram` is the total.
    A run of empty windows (:class:`~flowtrace.records.EmptyWindows`, a
    replayed recording's gap) adds nothing; other records are counted as
    ``dropped["not_a_histogram"]``."""

    name = "accumulate"

    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.counts: dict[tuple[int, int], int] = {}
        self.unit = "usecs"

    async def write(self, batch: list[Record]) -> None:
        histograms = [h for h in batch if isinstance(h, Histogram)]
        others = [r for r in batch if not isinstance(r, Histogram | EmptyWindows)]
        self.ctx.stats.drop("not_a_histogram", len(others))
        for h in histograms:
            self.unit = h.unit
            for b in h.buckets:
                self.counts[b.low, b.high] = self.counts.get((b.low, b.high), 0) + b.count

    def histogram(self) -> Histogram:
        buckets = [Bucket(low, high, n) for (low, high), n in sorted(self.counts.items())]
        return Histogram(field="lat_ns", unit=self.unit, scale="log2", buckets=buckets)


def latency_pipeline(every: float = 1.0) -> Pipeline:
    """Read latencies, a histogram per ``every`` seconds, accumulated."""
    return (
        read_latencies()
        | log2_histogram("lat_ns", unit="usecs", divisor=1000, every=Tumbling(every))
        | Accumulate()
    )


def render(h: Histogram) -> str:
    """``h`` exactly as bcc's ``print_log2_hist`` prints the same counts
    (:func:`flowtrace.render.histogram_lines`): nothing while empty."""
    lines = histogram_lines(h)
    return "\n".join(lines) + "\n" if lines else ""


class LatencyService:
    """Runs ``pipeline`` once and an HTTP server on ``host:port`` in one task group.

    ``GET /`` (text), ``/histogram`` (JSON) and ``/stats`` (JSON) answer from
    the live state; any other path is a 404. Requests are read with a bound
    (8 KiB, ``request_timeout`` seconds: a request not whole by then gets a
    408); one response per connection. A client that closes or
    resets its connection early ends only that connection. The server keeps
    answering after the pipeline ends (a finished replay), until :meth:`stop`.

    At most ``max_connections`` connections are open at once; the next is
    accepted when one closes (until then it waits in the listen queue). An
    accept that fails for want of file descriptors or memory (EMFILE,
    ENFILE, ENOBUFS, ENOMEM) is retried every 0.1 s, counted in
    :attr:`accept_failures` and reported once through ``report``; the
    server never stops for it.

    :meth:`run` raises the pipeline's own error if it fails before it is
    started; a failure later is kept in :attr:`error` and stops the service.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_connections: int = 256,
        request_timeout: float = 10.0,
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        if not isinstance(pipeline.sink, Accumulate):
            raise TypeError("the pipeline must end in an Accumulate sink")
        if isinstance(max_connections, bool) or max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        if not 0 < request_timeout < math.inf:
            raise ValueError(f"request_timeout must be a positive number, got {request_timeout!r}")
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.report = report
        self.accept_failures = 0
        """Accepts that failed for want of descriptors or memory (and were retried)."""
        self.pipeline_run = Run(pipeline)
        self.sink = cast(Accumulate, self.pipeline_run.sink)
        self.host, self.port = host, port
        self.pipeline_done = anyio.Event()
        self.error: Exception | None = None
        """Why the pipeline failed, if it did (the server then stops too)."""
        self._stopped = anyio.Event()

    def stop(self) -> None:
        """Stop the pipeline (detach, drain), then the server."""
        self.pipeline_run.stop()
        self._stopped.set()

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`; reports the URL once listening and attached."""
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            slots = anyio.Semaphore(self.max_connections)
            for one in listener.listeners:  # an address per family, for some hosts
                tg.start_soon(self._serve, cast(SocketListener, one), slots)
            await tg.start(self._run_pipeline)
            task_status.started(f"http://{self.host}:{self.port}/")
            await self._stopped.wait()
            await self.pipeline_done.wait()
            tg.cancel_scope.cancel()

    async def _run_pipeline(self, *, task_status: TaskStatus[Run]) -> None:
        status = _Started(task_status)
        try:
            await self.pipeline_run.run(task_status=cast("TaskStatus[Run]", status))
        except FlowtraceError as exc:
            if not status.done:
                raise  # failed while starting: the caller of run() gets the real error
            self.error = exc
            self._stopped.set()
        finally:
            self.pipeline_done.set()

    async def _serve(self, listener: SocketListener, slots: anyio.Semaphore) -> None:
        """Accept connections while a slot is free (one per open connection)."""
        async with anyio.create_task_group() as tg:
            while True:
                await slots.acquire()
                try:
                    client = await listener.accept()
                except OSError as exc:
                    slots.release()
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    if not self.accept_failures:
                        self.report(
                            f"cannot accept a connection: {exc.strerror}; waiting for open"
                            " ones to close (raise ulimit -n or lower --max-connections)"
                        )
                    self.accept_failures += 1
                    await anyio.sleep(0.1)
                    continue
                tg.start_soon(self._answer, client, slots)

    async def _answer(self, client: SocketStream, slots: anyio.Semaphore) -> None:
        try:
            await self._respond_quietly(client)
        finally:
            slots.release()

    async def _respond_quietly(self, client: SocketStream) -> None:
        async with client:
            # a client that went away early ends its own connection only
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await self._respond(client)

    async def _respond(self, client: SocketStream) -> None:
        request = b""
        with anyio.move_on_after(self.request_timeout) as reading:
            while b"\r\n\r\n" not in request and len(request) < 8192:
                request += await client.receive()
        if reading.cancelled_caught:
            status, kind, body = "408 Request Timeout", "text/plain", b"no request in time\n"
        else:
            method, _, rest = request.partition(b" ")
            path = rest.partition(b" ")[0].decode("ascii", "replace")
            status, kind, body = self._route(method, path)
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        await client.send(head.encode() + body)

    def _route(self, method: bytes, path: str) -> tuple[str, str, bytes]:
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/":
            return "200 OK", "text/plain", render(self.sink.histogram()).encode()
        if path == "/histogram":
            return "200 OK", "application/json", _JSON.encode(envelope(self.sink.histogram()))
        if path == "/stats":
            body: Any = envelope(summary(self.pipeline_run.stats))
            return "200 OK", "application/json", _JSON.encode(body)
        return "404 Not Found", "text/plain", b"try /, /histogram or /stats\n"


_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
"""Accept errors that pass once connections close: out of descriptors or memory."""


class _Started:
    """Passes ``started`` on to a task status, remembering that it was called."""

    def __init__(self, status: TaskStatus[Run]) -> None:
        self.status = status
        self.done = False

    def started(self, value: Run) -> None:
        self.done = True
        self.status.started(value)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _main(service: LatencyService) -> None:
    async with anyio.create_task_group() as tg:
        url = await tg.start(service.run)
        print(f"latency_service: serving {url}", file=sys.stderr, flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                service.stop()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--every", type=float, default=1.0, help="seconds per histogram")
    parser.add_argument("--replay", metavar="PATH", help="read events from a recording")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        metavar="N",
        help="connections served at once; more wait until one closes (default 256)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a connection without a whole request by then gets a 408 (default 10)",
    )
    args = parser.parse_args(argv)
    try:
        pipeline = latency_pipeline(args.every)
        if args.replay:
            pipeline = replay(pipeline, args.replay)
        service = LatencyService(
            pipeline,
            args.host,
            args.port,
            max_connections=args.max_connections,
            request_timeout=args.request_timeout,
            report=lambda line: print(f"latency_service: {line}", file=sys.stderr, flush=True),
        )
        try:
            anyio.run(_main, service)
        except BaseExceptionGroup as group:  # errors raised in the task groups
            failures, _ = group.split((FlowtraceError, OSError))
            if failures is None:
                raise
            raise _first_leaf(failures) from None
    except (FlowtraceError, OSError, ValueError) as exc:
        print(f"latency_service: error: {exc}", file=sys.stderr)
        return 2
    for line in service.pipeline_run.stats.summary():
        print(f"latency_service: {line}", file=sys.stderr)
    if service.error is not None:
        print(f"latency_service: error: {service.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
