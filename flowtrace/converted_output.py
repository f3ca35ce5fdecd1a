"""Records that user space finishes decoding: kernel record in, event out.

Some values are best kept raw in the kernel and finished in user space: a
16-byte address becomes ``"10.200.0.1"`` or ``"fd00::1"``, a state number
its name. :class:`Converted` wraps another output: the probes fill
``record`` (an :class:`~flowtrace.events.Event`) as usual, the wrapped
output carries and decodes it in bulk, and each batch read is handed on as
``convert(batch)``: the source's events. Per batch, one call; the per-record
work is whatever ``convert`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import Layout
from .loaded import LoadedProgram
from .outputs import Channel, Output, Reader

__all__ = ["Converted"]


@dataclass(frozen=True)
class Converted(Output):
    """``record`` values through ``output``, handed on as ``convert(batch)``."""

    takes_operators = False

    output: Output
    record: type[Any]
    convert: Callable[[list[Any]], list[Any]]

    def converter(self, loaded: LoadedProgram) -> Callable[[list[Any]], list[Any]]:
        """What converts the batches of one run of ``loaded`` (``convert``; an
        output that needs the run's program, its maps, makes its own)."""
        return self.convert

    def layout(self, event: type[Any]) -> Layout[Any] | None:
        return self.output.layout(self.record)

    def describe(self, event: type[Any]) -> str:
        return f"{self.output.describe(self.record)}, as {event.__name__}"

    def channel(self, layout: Layout[Any] | None, submit: str = "ft_submit") -> Channel:
        return _ConvertedChannel(self.output.channel(layout), self.converter)


class _ConvertedChannel(Channel):
    def __init__(
        self, inner: Channel, converter: Callable[[LoadedProgram], Callable[[list[Any]], list[Any]]]
    ) -> None:
        self._inner = inner
        self._converter = converter

    def declarations(self) -> str:
        return self._inner.declarations()

    def probe_body(self, body: str) -> str:
        return self._inner.probe_body(body)

    def open(self) -> None:
        self._inner.open()

    def connect(self, loaded: LoadedProgram) -> Reader:
        return _ConvertedReader(self._inner.connect(loaded), self._converter(loaded))

    def describe(self) -> str:
        return self._inner.describe()

    def close(self) -> None:
        self._inner.close()


class _ConvertedReader:
    def __init__(self, inner: Reader, convert: Callable[[list[Any]], list[Any]]) -> None:
        self._inner = inner
        self._convert = convert

    @property
    def fd(self) -> int:
        return self._inner.fd

    @property
    def max_wait(self) -> float:
        return self._inner.max_wait

    @property
    def capacity(self) -> int:
        return self._inner.capacity

    def read(self, limit: int) -> list[Any]:
        batch = self._inner.read(limit)
        return self._convert(batch) if batch else batch

    def pending(self) -> bool:
        return self._inner.pending()

    def unread(self) -> int:
        return self._inner.unread()

    def lost(self) -> int:
        return self._inner.lost()

    def close(self) -> None:
        self._inner.close()
