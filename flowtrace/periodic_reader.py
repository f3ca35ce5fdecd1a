"""Reading maps the kernel fills without signalling: at intervals and at the end.

Outputs that aggregate in the kernel (counters, sums per stack) wake their
source's loop for nothing: it waits on an event fd nobody writes, for at most
the time left in the period, and :meth:`PeriodicReader.take` reads the maps
when a period has passed and once more after the probes detach, so whatever
the program counted is read.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from typing import Any

from .loaded import LoadedProgram
from .outputs import Channel, Reader

__all__ = ["PeriodicChannel", "PeriodicReader"]


class PeriodicReader(ABC):
    """A :class:`flowtrace.outputs.Reader` that calls :meth:`take` every
    ``period`` seconds (with ``None``: only after the probes detach) and once
    more after they detach. Takers read totals, not increments, so nothing
    falls between two reads."""

    def __init__(self, loaded: LoadedProgram, period: float | None) -> None:
        self._loaded = loaded
        self._period = period
        self._due = time.monotonic() + (period or 1.0)
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    @abstractmethod
    def take(self) -> list[Any]:
        """The events for what the maps gained since the previous take."""

    @property
    @abstractmethod
    def capacity(self) -> int: ...

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def max_wait(self) -> float:
        return max(0.0, self._due - time.monotonic())

    def read(self, limit: int) -> list[Any]:
        now = time.monotonic()
        if now < self._due and not self._loaded.detached:
            return []
        self._due = now + (self._period or 1.0)
        if self._period is None and not self._loaded.detached:
            return []
        return self.take()

    def pending(self) -> bool:
        return False

    def unread(self) -> int:
        return 0  # the maps are read once more after the probes detach

    def lost(self) -> int:
        return 0  # the program counts what it could not add

    def close(self) -> None:
        os.close(self._fd)


class PeriodicChannel(Channel):
    """A channel whose reader is a :class:`PeriodicReader`, made on connect
    and closed with the channel."""

    def __init__(self) -> None:
        self._reader: PeriodicReader | None = None

    @abstractmethod
    def reader(self, loaded: LoadedProgram) -> PeriodicReader:
        """This run's reader of the program's maps."""

    def connect(self, loaded: LoadedProgram) -> Reader:
        self._reader = self.reader(loaded)
        return self._reader

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
