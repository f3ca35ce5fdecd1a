"""Sinks for stack counts: folded stacks and SVG flame graphs.

Both take :class:`~flowtrace.stack_counts.StackCount` records, add up the
counts of equal stacks (records of several periods, or of stacks that name
alike), and write once, when the run ends: everything is held until then,
one entry per distinct folded stack. Other items are not stacks: they fail
the stage with a message saying so.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO

import anyio

from flowtrace.context import StageContext
from flowtrace.flamegraph import flame_graph
from flowtrace.stack_counts import StackCount
from flowtrace.stacks import folded
from flowtrace.stages import Sink

__all__ = ["FlameGraphSink", "FoldedSink"]


class _StackSink(Sink[Any]):
    async def open(self, ctx: StageContext) -> None:
        await super().open(ctx)
        self.stacks: Counter[str] = Counter()

    async def write(self, batch: list[Any]) -> None:
        for item in batch:
            if not isinstance(item, StackCount):
                raise ValueError(
                    f"{self.stage_name()} takes stack counts, not a {type(item).__name__}"
                )
            self.stacks[folded(item.comm, item.user_stack, item.kernel_stack)] += item.count


class FoldedSink(_StackSink):
    """Writes ``comm;outermost;...;innermost count`` lines, highest count
    first, to ``path`` (a file it creates) or ``stream`` (stdout), the input
    of flamegraph.pl and of :class:`FlameGraphSink`."""

    def __init__(self, path: str | None = None, *, stream: TextIO | None = None) -> None:
        self.path = path
        self.stream = stream
        self.name = "folded"

    async def close(self) -> None:
        text = "".join(f"{stack} {count}\n" for stack, count in self.stacks.most_common())
        if self.path is not None:
            await anyio.Path(self.path).write_text(text)
        else:
            out = self.stream or sys.stdout
            out.write(text)
            out.flush()


class FlameGraphSink(_StackSink):
    """Writes an SVG flame graph of the stacks to ``path``."""

    def __init__(self, path: str, *, title: str = "Flame Graph") -> None:
        self.path = path
        self.title = title
        self.name = "flamegraph"

    async def close(self) -> None:
        await anyio.Path(self.path).write_text(flame_graph(self.stacks, self.title))
