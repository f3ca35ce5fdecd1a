"""Block I/O requests as the block:block_rq_issue and block:block_rq_complete
tracepoints report them, declared for ``tracepoints(...)`` and ``join``."""

from __future__ import annotations

from typing import Annotated

from flowtrace.events import Event
from flowtrace.ktypes import Char, ktime_ns, u32, u64

__all__ = ["BlockComplete", "BlockIssue", "BlockRequest"]


class BlockRequest(Event, frozen=True):
    """A block request: device (``major << 20 | minor``) and start sector,
    which the request keeps from issue to completion."""

    ts: ktime_ns
    dev: u32
    sector: u64


class BlockIssue(BlockRequest, frozen=True):
    """A request issued to the device: ``bytes`` long, ``rwbs`` its kind
    ("R", "W", "WS", "FWS"...: the operation is the R or W)."""

    bytes: u32
    rwbs: Annotated[str, Char(10)]


class BlockComplete(BlockRequest, frozen=True):
    """A request completed."""
