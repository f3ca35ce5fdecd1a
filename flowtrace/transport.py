"""Moving records from the kernel to Python in batches.

:class:`RingBufferReader` maps a BPF ring buffer into this process and
decodes every committed record between the consumer and producer positions
in one numpy pass: no Python callback per record. Its map fd is pollable, so
the event loop waits on it (``anyio.wait_readable``) without blocking.

:class:`PerfBufferReader` is the fallback for kernels without ring buffers
(before 5.8). It reads through bcc's perf buffer, which calls back per record
(bcc offers no batched read); records are appended raw and decoded in bulk.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from typing import Any, Protocol

import numpy as np

from .events import Event, Layout

__all__ = ["PerfBufferReader", "RingBufferReader", "Transport"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER = 8
_POS = struct.Struct("<Q")


class Transport(Protocol):
    """Reads decoded events from one kernel output buffer."""

    def read(self, limit: int) -> list[Event]:
        """Up to ``limit`` events that are ready now, oldest first; never blocks."""
        ...

    def pending(self) -> bool:
        """Whether records are waiting to be read."""
        ...

    def close(self) -> None: ...


class RingBufferReader:
    """Consumer side of a ``BPF_RINGBUF_OUTPUT`` map carrying one record type.

    Maps the consumer page read-write and the producer page plus the data area
    (mapped twice by the kernel, so a record that wraps is contiguous) read-only.
    The mappings hold the map alive, so a final drain works after bcc closed it.
    """

    def __init__(self, map_fd: int, size: int, layout: Layout[Any]) -> None:
        page = mmap.PAGESIZE
        self.fd = map_fd
        self._mask = size - 1
        self._layout = layout
        self._stride = _HEADER + (layout.size + 7) // 8 * 8
        self._dtype = layout.dtype(header=_HEADER, stride=self._stride)
        self._header = np.dtype({"names": ["len"], "formats": ["<u4"], "itemsize": self._stride})
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._data = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._data_start = page

    def pending(self) -> bool:
        return bool(_POS.unpack_from(self._consumer)[0] != _POS.unpack_from(self._data)[0])

    def read(self, limit: int) -> list[Event]:
        consumer = _POS.unpack_from(self._consumer)[0]
        producer = _POS.unpack_from(self._data)[0]
        count = min((producer - consumer) // self._stride, limit)
        if count <= 0:
            return []
        offset = self._data_start + (consumer & self._mask)
        lengths = np.frombuffer(self._data, self._header, count, offset)["len"]
        flagged = np.flatnonzero(lengths & (_BUSY | _DISCARD))
        if flagged.size and lengths[flagged[0]] & _BUSY:
            count = int(flagged[0])  # stop at the first record still being written
        records = np.frombuffer(self._data, self._dtype, count, offset)
        if flagged.size:
            records = records[(lengths[:count] & _DISCARD) == 0]
        events = self._layout.decode(records)
        del records, lengths
        _POS.pack_into(self._consumer, 0, consumer + count * self._stride)
        return events

    def close(self) -> None:
        self._consumer.close()
        self._data.close()


class PerfBufferReader:
    """Perf buffer fallback: bcc's per-CPU perf rings, decoded in bulk.

    bcc calls :meth:`_on_record` once per record while polling; the reader only
    copies the bytes there. Records the kernel could not write are reported by
    bcc's lost callback and added to :attr:`lost`.
    """

    def __init__(self, bpf: Any, table: bytes, layout: Layout[Any], pages: int) -> None:
        self._bpf = bpf
        self._layout = layout
        self._raw: list[bytes] = []
        self.lost = 0
        self.fd = -1
        bpf[table].open_perf_buffer(self._on_record, page_cnt=pages, lost_cb=self._on_lost)

    def _on_record(self, _cpu: int, data: int, size: int) -> None:
        self._raw.append(ctypes.string_at(data, self._layout.size))

    def _on_lost(self, count: int) -> None:
        self.lost += count

    def pending(self) -> bool:
        self._bpf.perf_buffer_poll(timeout=0)
        return bool(self._raw)

    def read(self, limit: int) -> list[Event]:
        if not self._raw:
            self._bpf.perf_buffer_poll(timeout=0)
        raw, self._raw = self._raw[:limit], self._raw[limit:]
        return self._layout.decode_bytes(b"".join(raw)) if raw else []

    def close(self) -> None:
        self._raw.clear()
