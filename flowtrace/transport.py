"""Moving records from the kernel to Python in batches.

:class:`RingBufferReader` maps a BPF ring buffer into this process and
decodes every committed record between the consumer and producer positions
in one numpy pass: no Python callback per record. Its map fd is pollable, so
the event loop waits on it (``anyio.wait_readable``) without blocking.

:class:`PerfBufferReader` is the fallback for kernels without ring buffers
(before 5.8): it maps the per-CPU perf rings itself, so it too reads in bulk
without a callback per record.

Both are :class:`flowtrace.outputs.Reader` s, made by the ring and perf
buffer outputs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import select
import struct
from typing import Any

import numpy as np

from .events import Event, Layout

__all__ = ["FEW", "PerfBufferReader", "PerfRecords", "RingBufferReader"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER = 8
_LENGTH = struct.Struct("<I")

FEW = 8
"""Reads of at most this many records decode them one by one: cheaper
than building arrays for them (a record or two while records come slowly)."""


class RingBufferReader:
    """Consumer side of a ``BPF_RINGBUF_OUTPUT`` map carrying one record type.

    Maps the consumer page read-write and the producer page plus the data area
    (mapped twice by the kernel, so a record that wraps is contiguous) read-only.
    The mappings hold the map alive, so a final drain works after bcc closed it.
    Positions are read with plain loads, which x86-64's memory ordering makes
    sufficient; weaker-ordered CPUs (arm64) would need acquire/release loads.
    """

    def __init__(self, map_fd: int, size: int, layout: Layout[Any]) -> None:
        page = mmap.PAGESIZE
        self.fd = map_fd
        self._mask = size - 1
        self._layout = layout
        self._stride = _HEADER + (layout.size + 7) // 8 * 8
        self._dtype = layout.dtype(header=_HEADER, stride=self._stride)
        self._header = np.dtype({"names": ["len"], "formats": ["<u4"], "itemsize": self._stride})
        self._consumer_map = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._data = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._data_start = page
        self._strings: dict[bytes, str] = {}
        self.capacity = size // self._stride
        # the kernel wakes the reader when records arrive; the loop wakes on
        # its own at this interval too, as the perf reader's does: a process
        # that ran recently takes its next record sooner (docs/architecture.md)
        self.max_wait = 0.05
        # Positions are read and written as whole 8-byte words: struct.pack_into
        # writes byte by byte, and the kernel could see a half-written position.
        self._consumer = memoryview(self._consumer_map).cast("Q")
        self._producer = memoryview(self._data)[:8].cast("Q")

    def pending(self) -> bool:
        return bool(self._consumer[0] != self._producer[0])

    def lost(self) -> int:
        return 0  # the program counts every failed output

    def unread(self) -> int:
        return int((self._producer[0] - self._consumer[0]) // self._stride)

    def read(self, limit: int) -> list[Event]:
        """Up to ``limit`` committed events, oldest first; never blocks.

        Stops before the first record still being written (its producer
        reserved it but has not committed); skips discarded ones; then hands
        the space back to the kernel.
        """
        consumer = self._consumer[0]
        producer = self._producer[0]
        count = min((producer - consumer) // self._stride, limit)
        if count <= 0:
            return []
        offset = self._data_start + (consumer & self._mask)
        if count <= FEW:
            return self._read_few(consumer, offset, count)
        # one snapshot of the headers: a producer may commit while we look
        lengths = np.frombuffer(self._data, self._header, count, offset)["len"].copy()
        busy = np.flatnonzero(lengths & _BUSY)
        if busy.size:
            count = int(busy[0])
            lengths = lengths[:count]
        records = np.frombuffer(self._data, self._dtype, count, offset)
        discarded = (lengths & _DISCARD) != 0
        if discarded.any():
            records = records[~discarded]
        events = self._layout.decode(records, self._strings)
        del records
        self._consumer[0] = consumer + count * self._stride
        return events

    def _read_few(self, consumer: int, offset: int, count: int) -> list[Event]:
        """:meth:`read` of a handful of records, one by one (no arrays to build)."""
        taken: list[int] = []
        stride = self._stride
        done = 0
        for at in range(offset, offset + count * stride, stride):
            length = _LENGTH.unpack_from(self._data, at)[0]
            if length & _BUSY:
                break
            done += 1
            if not length & _DISCARD:
                taken.append(at + _HEADER)
        events = self._layout.decode_at(self._data, taken, self._strings)
        self._consumer[0] = consumer + done * stride
        return events

    def close(self) -> None:
        self._consumer.release()
        self._producer.release()
        self._consumer_map.close()
        self._data.close()


class _PerfEventAttr(ctypes.Structure):
    """The leading fields of ``struct perf_event_attr`` (PERF_ATTR_SIZE_VER5)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("_reserved", ctypes.c_uint16),
    ]


_PERF_TYPE_SOFTWARE = 1
_PERF_COUNT_SW_BPF_OUTPUT = 10
_PERF_SAMPLE_RAW = 1 << 10
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_PERF_ATTR_WATERMARK = 1 << 14  # perf_event_attr.watermark
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_RECORD_SAMPLE = 9
_DATA_HEAD = 1024  # offsets in struct perf_event_mmap_page
_DATA_TAIL = 1032
_PERF_HEADER = struct.Struct("<IHH")
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(platform.machine())


def _perf_event_open(cpu: int, watermark: int) -> int:
    if _SYS_PERF_EVENT_OPEN is None:
        raise OSError(errno.ENOSYS, "perf_event_open: unsupported architecture")
    attr = _PerfEventAttr(
        type=_PERF_TYPE_SOFTWARE,
        size=ctypes.sizeof(_PerfEventAttr),
        config=_PERF_COUNT_SW_BPF_OUTPUT,
        sample_period=1,
        sample_type=_PERF_SAMPLE_RAW,
        flags=_PERF_ATTR_WATERMARK,
        wakeup_events=watermark,  # with the watermark flag: wake at this many bytes
    )
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(
        libc.syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, cpu, -1, _PERF_FLAG_FD_CLOEXEC)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open on CPU {cpu}: {os.strerror(err)}")
    return fd


class _PerfRing:
    """One CPU's perf ring: a metadata page, then ``size`` bytes of data."""

    def __init__(self, cpu: int, pages: int, per_record: bool) -> None:
        page = mmap.PAGESIZE
        self.size = pages * page
        # wake the reader for every record, or when an eighth of the ring is used
        self.fd = _perf_event_open(cpu, watermark=1 if per_record else max(self.size // 8, 1))
        self.map = mmap.mmap(
            self.fd, page + self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._page = page
        # whole 8-byte words: the kernel must never see a half-written tail
        self._words = memoryview(self.map)[:page].cast("Q")
        fcntl.ioctl(self.fd, _PERF_EVENT_IOC_ENABLE, 0)

    def backlog(self) -> int:
        """Bytes written and not yet taken."""
        return int(self._words[_DATA_HEAD // 8] - self._words[_DATA_TAIL // 8])

    def take(self) -> bytes:
        """Every complete record written since the last call, unwrapped."""
        head = self._words[_DATA_HEAD // 8]
        tail = self._words[_DATA_TAIL // 8]
        if head == tail:
            return b""
        start = self._page + tail % self.size
        end = start + (head - tail)
        limit = self._page + self.size
        if end <= limit:
            data = self.map[start:end]
        else:
            data = self.map[start:limit] + self.map[self._page : self._page + end - limit]
        self._words[_DATA_TAIL // 8] = head
        return data

    def close(self) -> None:
        self._words.release()
        self.map.close()
        os.close(self.fd)


class PerfBufferReader:
    """Fallback for kernels without ring buffers: per-CPU perf rings, read in bulk.

    Opens two BPF-output perf events per CPU and maps their rings: a bulk
    ring of ``pages`` pages that wakes the reader when an eighth of it is
    used, and a prompt ring of an eighth of that (at least 8 pages) that
    wakes it for every record, as bcc's perf buffers do. The program's
    ``BPF_PERF_OUTPUT`` map points at the prompt rings, so a record never
    waits for others to wake the reader; :meth:`wake_per_record` points it
    at the bulk rings while records come fast (a wake-up per record costs
    the traced process an interrupt), and back. Records written before a
    switch are read before those after it. One epoll fd covers every ring,
    so the event loop waits on a single descriptor. Each read copies whatever
    the rings hold and, when every record there is a sample of the expected
    size (the normal case), decodes them all in one numpy pass. Loss is not
    taken from the kernel's lost-record notices (they arrive late, when space
    frees): every failed output is already counted by the BPF program. Events
    from different CPUs are ordered per CPU only, as with any perf buffer.
    """

    def __init__(self, table: Any, layout: Layout[Any], pages: int, cpus: list[int]) -> None:
        self._records = PerfRecords(layout)
        self._stride = self._records.stride
        self._rings: list[_PerfRing] = []  # bulk and prompt ring of each CPU, in turn
        self._epoll = select.epoll()
        self.fd = self._epoll.fileno()
        self.capacity = pages * mmap.PAGESIZE // self._stride  # per CPU
        self.max_wait = 0.05  # bulk rings below their wake-up watermark wait this long
        self._table = table
        self._cpus = cpus
        self.per_record = True
        """Whether the program writes to the prompt rings (else the bulk rings)."""
        try:
            for cpu in cpus:
                for per_record in (False, True):
                    size = max(8, pages // 8) if per_record else pages
                    ring = _PerfRing(cpu, size, per_record)
                    self._rings.append(ring)
                    self._epoll.register(ring.fd, select.EPOLLIN)
                table[table.Key(cpu)] = table.Leaf(self._rings[-1].fd)
        except BaseException:
            self.close()
            raise

    def wake_per_record(self, yes: bool) -> None:
        """Have the program write to the prompt rings (``yes``) or the bulk rings."""
        if yes != self.per_record:
            table = self._table
            for cpu, ring in zip(self._cpus, self._rings[int(yes) :: 2], strict=True):
                table[table.Key(cpu)] = table.Leaf(ring.fd)
            self.per_record = yes

    def pending(self) -> bool:
        return any(ring.backlog() for ring in self._rings)

    def lost(self) -> int:
        return 0  # the program counts every failed output (see the class docstring)

    def unread(self) -> int:
        """Records in the rings (lost-record notices, if any, counted as one each)."""
        return sum(ring.backlog() for ring in self._rings) // self._stride

    def read(self, limit: int) -> list[Event]:
        """What the rings hold now, CPU by CPU (the ring the program no longer
        writes to first), until ``limit`` is reached; a ring is taken whole,
        so a read may pass ``limit`` by one ring's content."""
        events: list[Event] = []
        first = int(not self.per_record)  # the ring the program does not write to
        for index in range(0, len(self._rings), 2):
            for ring in (self._rings[index + first], self._rings[index + 1 - first]):
                if len(events) >= limit:
                    return events
                data = ring.take()
                if data:
                    events += self._records.decode(data)
        return events

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self._epoll.close()


class PerfRecords:
    """Decoder of what a perf ring holds: samples carrying records of
    ``layout``, and lost-record notices (skipped)."""

    def __init__(self, layout: Layout[Any]) -> None:
        self._layout = layout
        raw = 4 + layout.size
        self.stride = _PERF_HEADER.size + (raw + 7) // 8 * 8
        """Bytes of one sample."""
        self._payload = _PERF_HEADER.size + 4  # the header, then the raw data's size
        self._dtype = layout.dtype(header=self._payload, stride=self.stride)
        self._headers = np.dtype(
            {
                "names": ["type", "size"],
                "formats": ["<u4", "<u2"],
                "offsets": [0, 6],
                "itemsize": self.stride,
            }
        )
        self._strings: dict[bytes, str] = {}

    def decode(self, data: bytes) -> list[Event]:
        """The events of the samples in ``data``, in order."""
        count = len(data) // self.stride
        if count <= FEW:
            return self._layout.decode_at(data, self._samples(data), self._strings)
        if count * self.stride == len(data):
            headers = np.frombuffer(data, self._headers, count)
            if bool(
                np.all((headers["type"] == _PERF_RECORD_SAMPLE) & (headers["size"] == self.stride))
            ):
                return self._layout.decode(np.frombuffer(data, self._dtype, count), self._strings)
        return self._decode_mixed(data)

    def _decode_mixed(self, data: bytes) -> list[Event]:
        """Many records, lost-record notices among them: the samples copied
        together, then decoded in one pass."""
        stride, payload = self.stride, self._payload
        samples = b"".join(data[at - payload : at - payload + stride] for at in self._samples(data))
        return self._layout.decode(np.frombuffer(samples, self._dtype), self._strings)

    def _samples(self, data: bytes) -> list[int]:
        """Where the records of the samples in ``data`` start, skipping
        lost-record notices."""
        starts = []
        offset = 0
        while offset + _PERF_HEADER.size <= len(data):
            kind, _misc, size = _PERF_HEADER.unpack_from(data, offset)
            if kind == _PERF_RECORD_SAMPLE and size == self.stride:
                starts.append(offset + self._payload)
            offset += size
        return starts
