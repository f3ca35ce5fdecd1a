"""The output of a kernel source whose program also runs operators.

:class:`ChainOutput` wraps the source's own output (a buffer) around the
compiled chain (:mod:`flowtrace.kernel_chain`). What leaves the kernel
depends on the chain's last stage: the source's records (filters), a
join's pairs (through the same buffer, decoded into the join's records),
or an aggregate's results, which never cross a buffer: user space reads
the aggregate's maps at the end of each window and at the end of the run
(:class:`MapsReader`, the "maps read by user space" output) and emits the
operator's records.

**Exact windows.** The program counts each event into the maps of the
window whose number it reads from ``ft_window``; maps alternate between
even and odd window numbers. Before touching a map it adds one to its
parity's in-flight count (a per-CPU counter, with an atomic add that is a
full memory barrier), reads the window number again, and if it changed
meanwhile, gives the count back and starts over with the new number
(twice at most; a third change within one event is counted as
``window_race``). When a window ends, user space writes the next number,
issues a memory barrier of its own (``membarrier(2)``), and waits until
the old parity's in-flight count is 0: every update that read the old
number has then landed, and none can start (it would read the new
number). Only then are the old maps read and cleared, so no increment is
lost between reading and clearing, and every event is in exactly one
window. At the end of a run the probes are detached and user space waits
for an RCU grace period (every program that was running has finished)
before the last read.

Counters: every kernel stage counts what reaches it and what it drops in
``ft_flow``; the channel copies them into the run's stage counters every
0.25 s and at the end, so a stage in the kernel reports like one in Python.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bpf_maps import PerCpuMap, barrier, per_cpu_sum, wait_for_programs, write_u32_array
from .clock import with_wall_bounds
from .context import SourceContext
from .events import Layout
from .kernel_aggregate import IN_FLIGHT_MAP, WINDOW_MAP, AggregateStage
from .kernel_chain import FLOW_MAP, OUTPUT_FUNCTION, CompiledChain
from .kernel_join import JoinStage
from .loaded import LoadedProgram
from .outputs import Channel, Output, Reader
from .stats import StageStats

__all__ = ["ChainChannel", "ChainOutput", "MapsReader"]

_REFRESH = 0.25
_QUIESCE_WAIT = 0.001
_NOT_COUNTED = ("in", "new", "taken")  # counters that are not drops


@dataclass(frozen=True)
class ChainOutput(Output):
    """The output of a source whose program runs ``chain``: the operators
    named ``stages``, then ``inner`` (the source's own output) for what
    leaves as records."""

    inner: Output
    chain: CompiledChain
    stages: tuple[str, ...]

    def layout(self, event: type[Any]) -> Layout[Any] | None:
        return self.inner.layout(event)

    def describe(self, event: type[Any]) -> str:
        return self.describe_types(event.__name__)

    def describe_types(self, events: str) -> str:
        """What comes out, for a source of ``events`` (their names)."""
        names = ", ".join(self.stages)
        if self.chain.output == "maps":
            return f"{events} into {names} in the kernel; results read from BPF maps by user space"
        what = "join pairs" if self.chain.output == "pairs" else "records"
        buffer = self.inner.describe(object).split(" via ", 1)[-1]
        return f"{events} through {names} in the kernel; {what} via {buffer}"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        if layout is None:
            raise ValueError("operators in the kernel need the record the probes fill")
        return ChainChannel(self, layout)


class ChainChannel(Channel):
    """One run of a chain: its C, then its reader and counters."""

    counts_received = True

    def __init__(self, output: ChainOutput, layout: Layout[Any]) -> None:
        self.output = output
        self.chain = output.chain
        out = self.chain.leaving or layout
        self.inner = (
            None if self.chain.output == "maps" else output.inner.channel(out, OUTPUT_FUNCTION)
        )
        self.reader: Reader | None = None
        self.loaded: LoadedProgram | None = None
        self.ctx: SourceContext | None = None

    def declarations(self) -> str:
        inner = self.inner.declarations() if self.inner is not None else ""
        return "\n\n".join(p for p in (self.chain.declarations, inner, self.chain.submit) if p)

    def open(self) -> None:
        if self.inner is not None:
            self.inner.open()

    def connect(self, loaded: LoadedProgram) -> Reader:
        self.loaded = loaded
        if self.inner is not None:
            self.reader = self.inner.connect(loaded)
        else:
            stage = self.chain.stages[-1]
            assert isinstance(stage, AggregateStage)
            self.reader = MapsReader(loaded, stage)
        return self.reader

    def started(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        if isinstance(self.reader, MapsReader):
            self.reader.start(ctx)

    def detached(self) -> None:
        wait_for_programs()
        if isinstance(self.reader, MapsReader):
            self.reader.finishing = True

    def refresh(self, ctx: SourceContext, final: bool = False) -> None:
        if self.loaded is None or self.loaded.bpf is None:
            return
        slots = max(1, len(self.chain.counters))
        counts = per_cpu_sum(self.loaded.table(FLOW_MAP).map_fd, 0, np.dtype(("<u8", (slots,))))
        flow = {slot: int(n) for slot, n in zip(self.chain.counters, counts.tolist(), strict=False)}
        stats = ctx.kernel_stages
        reached = [flow.get((i, "in"), 0) for i in range(len(self.chain.stages))]
        ctx.stats.received = ctx.stats.emitted = reached[0] if reached else 0
        for i, stage_stats in enumerate(stats):
            stage_stats.received = reached[i]
            if i + 1 < len(stats):
                stage_stats.emitted = reached[i + 1]
            for (index, what), n in flow.items():
                if index == i and what not in _NOT_COUNTED and n:
                    stage_stats.dropped[what] = n
        if final:
            self._final_join_counts(flow, stats)

    def _final_join_counts(self, flow: dict[tuple[int, str], int], stats: list[StageStats]) -> None:
        assert self.loaded is not None
        for i, stage in enumerate(self.chain.stages):
            if not isinstance(stage, JoinStage) or i >= len(stats):
                continue
            starts = self.loaded.table(stage.starts_map)
            waiting = PerCpuMap(
                starts.map_fd, np.dtype("<u8"), stage.key.size, stage.form.max_pending, True
            ).count()
            pushed_out = flow.get((i, "new"), 0) - flow.get((i, "taken"), 0) - waiting
            stats[i].drop("pending_at_end", waiting)
            stats[i].drop("pending_limit", max(0, pushed_out))

    def describe(self) -> str:
        if self.inner is not None:
            return self.inner.describe()
        stage = self.chain.stages[-1]
        assert isinstance(stage, AggregateStage)
        every = stage.form.every
        when = f"every {every:g} s" if every is not None else "at the end"
        return f"the results of the operators in the kernel from its maps, {when}"

    def close(self) -> None:
        try:
            if self.inner is not None:
                self.inner.close()
        finally:
            if isinstance(self.reader, MapsReader):
                self.reader.close()
            self.reader = None


class MapsReader:
    """Reads an aggregate's maps when a window ends and at the end of the
    run, and returns the operator's records (see the module docstring)."""

    capacity = 1 << 20

    def __init__(self, loaded: LoadedProgram, stage: AggregateStage) -> None:
        self.stage = stage
        self.form = stage.form
        maps = stage.maps
        key_size = maps.key.size if maps.key is not None else 4
        self.maps = [
            PerCpuMap(loaded.table(name).map_fd, maps.value, key_size, maps.max_keys, maps.keyed)
            for name in maps.names
        ]
        self.windowed = self.form.every is not None
        self.window_fd = loaded.table(WINDOW_MAP).map_fd if self.windowed else -1
        self.in_flight_fd = loaded.table(IN_FLIGHT_MAP).map_fd if self.windowed else -1
        self._pipe = os.pipe()  # never written: the loop wakes by max_wait
        self.ctx: SourceContext | None = None
        self.window = 0  # the window the program counts into
        self.closing: int | None = None  # a window moved past, not read yet
        self.emitted = 0
        self.finishing = False
        self.finished = False
        self.stopped = False

    @property
    def fd(self) -> int:
        return self._pipe[0]

    def start(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.origin = ctx.clock.now()
        self.origin_ns = _ns(self.origin)
        self.step_ns = max(1, _ns(self.form.every)) if self.form.every is not None else 0

    @property
    def max_wait(self) -> float:
        if self.closing is not None:
            return _QUIESCE_WAIT
        if not self.windowed or self.ctx is None:
            return _REFRESH
        left = (self._end_ns(self.window) - _ns(self.ctx.clock.now())) / 1e9
        return min(_REFRESH, max(0.0, left))

    def read(self, limit: int) -> list[Any]:
        if self.finished or self.ctx is None:
            return []
        if self.finishing:
            self.finished = True
            return self._final()
        if not self.windowed or self.stopped:
            return []
        out: list[Any] = []
        if self.closing is None and _ns(self.ctx.clock.now()) >= self._end_ns(self.window):
            self.closing = self.window
            self.window += 1
            write_u32_array(self.window_fd, 0, self.window)
            barrier()
        if self.closing is not None and self._quiet(self.closing):
            closing, self.closing = self.closing, None
            out = self._emit(closing, self._take(closing))
        return out

    def pending(self) -> bool:
        return self.finishing and not self.finished

    def unread(self) -> int:
        return 0

    def lost(self) -> int:
        return 0

    def close(self) -> None:
        for fd in self._pipe:
            if fd >= 0:
                os.close(fd)
        self._pipe = (-1, -1)

    # -- windows -------------------------------------------------------------

    def _end_ns(self, q: int) -> int:
        return self.origin_ns + (q + 1) * self.step_ns

    def _bounds(self, q: int) -> tuple[float, float]:
        start = self.origin if q <= 0 else (self.origin_ns + q * self.step_ns) / 1e9
        return start, self._end_ns(q) / 1e9

    def _quiet(self, window: int) -> bool:
        """Whether no update of ``window``'s maps is under way."""
        busy = per_cpu_sum(self.in_flight_fd, window & 1, np.dtype("<i8"))
        return int(busy) == 0

    def _settle(self, window: int) -> None:
        """At the end: wait (up to 0.1 s) for updates of ``window`` a
        preempted program may still be making."""
        for _ in range(100):
            if self._quiet(window):
                return
            time.sleep(0.001)

    def _take(self, window: int) -> tuple[Any, int]:
        """``window``'s accumulator(s) and event count, clearing its maps."""
        table = self.maps[window & 1] if self.windowed else self.maps[0]
        raw, values = table.take()
        keys = self._keys(raw, len(values)) if table.keyed else None
        return self.stage.accumulate(keys, values)

    def _keys(self, raw: bytes, count: int) -> list[Hashable]:
        key = self.stage.maps.key
        assert key is not None
        if not count:
            return []
        decoded = key.decode(np.frombuffer(raw, dtype=key.dtype(), count=count))
        names = [f.name for f in key.fields]
        if len(names) == 1:
            return [getattr(k, names[0]) for k in decoded]
        return [tuple(getattr(k, n) for n in names) for k in decoded]

    def _records(self, taken: tuple[Any, int], start: float, end: float) -> list[Any]:
        acc, _ = taken
        if acc is None:
            acc = self.stage.empty()
        if self.stage.maps.keyed and self.form.aggregate != "count_by" and not acc:
            return []
        assert self.ctx is not None
        records = list(self.form.records(acc, start, end))
        return with_wall_bounds(records, self.ctx.clock, start, end)

    def _emit(self, window: int, taken: tuple[Any, int]) -> list[Any]:
        """Window ``window``'s records; after the ``limit``-th window, what
        the kernel counts afterwards is dropped (``after_limit``) and the
        run is asked to stop."""
        assert self.ctx is not None
        if self.stopped:
            self._drop("after_limit", taken[1])
            return []
        out = self._records(taken, *self._bounds(window))
        self.emitted += 1
        if self.form.limit is not None and self.emitted >= self.form.limit:
            self.stopped = True
            self.ctx.request_stop()
        return out

    def _drop(self, reason: str, count: int) -> None:
        assert self.ctx is not None
        if self.ctx.kernel_stages:
            self.ctx.kernel_stages[-1].drop(reason, count)

    def _final(self) -> list[Any]:
        """The end of the run: the windows still open, the last one cut at now."""
        assert self.ctx is not None
        now = self.ctx.clock.now()
        if not self.windowed:
            return self._records(self._take(0), self.origin, now)
        out: list[Any] = []
        if self.closing is not None:
            closing, self.closing = self.closing, None
            out += self._emit(closing, self._take(closing))
        current = max(self.window, (_ns(now) - self.origin_ns) // self.step_ns)
        self._settle(self.window)
        taken = self._take(self.window)
        for q in range(self.window, current + 1):
            if self.stopped:
                self._drop("after_limit", taken[1])
                break
            start, end = self._bounds(q)
            records = self._records(taken, start, now if q == current else end)
            taken = (None, 0)
            self.emitted += 1
            out += records
            if self.form.limit is not None and self.emitted >= self.form.limit:
                self.stopped = True
        return out


def _ns(seconds: float) -> int:
    """Seconds as whole nanoseconds, rounded as the window operators round them."""
    return round(seconds * 1e9)
