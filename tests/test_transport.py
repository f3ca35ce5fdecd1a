"""The ring-buffer reader on memory laid out like a BPF ring buffer map, so
its handling of records still being written, discarded records and the
wrap-around can be tested exactly, without a kernel; and the decoding of
what a perf ring holds, lost-record notices among the samples."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator, Sequence

import pytest

from flowtrace import Event, layout_of
from flowtrace.ktypes import u64
from flowtrace.transport import FEW, PerfRecords, RingBufferReader

BUSY = 1 << 31
DISCARD = 1 << 30
PAGE = mmap.PAGESIZE
SIZE = PAGE  # one page of data
STRIDE = 16  # 8-byte header + one u64


class Value(Event, frozen=True):
    v: u64


class FakeRing:
    """consumer page | producer page | data | data again (the kernel maps the
    data twice so a wrapping record is contiguous)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("ringbuf")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.map = mmap.mmap(self.fd, 2 * PAGE + 2 * SIZE)
        self.producer = 0

    def write(self, records: Sequence[tuple[int, int]]) -> None:
        """Append (header flags, value) records and publish the producer position."""
        for flags, value in records:
            at = self.producer % SIZE
            for base in (2 * PAGE, 2 * PAGE + SIZE):
                struct.pack_into("<IIQ", self.map, base + at, 8 | flags, 0, value)
            self.producer += STRIDE
        struct.pack_into("<Q", self.map, PAGE, self.producer)

    def commit(self, index_from_consumer: int) -> None:
        at = (self.consumer + index_from_consumer * STRIDE) % SIZE
        for base in (2 * PAGE, 2 * PAGE + SIZE):
            struct.pack_into("<I", self.map, base + at, 8)

    @property
    def consumer(self) -> int:
        return int(struct.unpack_from("<Q", self.map, 0)[0])

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


@pytest.fixture
def ring() -> Iterator[tuple[FakeRing, RingBufferReader]]:
    fake = FakeRing()
    reader = RingBufferReader(fake.fd, SIZE, layout_of(Value))
    yield fake, reader
    reader.close()
    fake.close()


def values(events: list[Event]) -> list[int]:
    return [e.v for e in events]  # type: ignore[attr-defined]


def test_reads_committed_records_in_order(ring: tuple[FakeRing, RingBufferReader]) -> None:
    fake, reader = ring
    fake.write([(0, 1), (0, 2), (0, 3)])
    assert values(reader.read(100)) == [1, 2, 3]
    assert fake.consumer == 3 * STRIDE
    assert reader.read(100) == []
    assert not reader.pending()


@pytest.mark.parametrize("lead", [0, FEW + 1])  # decoded one by one, and in one pass
def test_stops_at_a_record_still_being_written(
    ring: tuple[FakeRing, RingBufferReader], lead: int
) -> None:
    fake, reader = ring
    first = list(range(100, 100 + lead))
    fake.write([(0, v) for v in first] + [(0, 1), (DISCARD, 2), (BUSY, 3), (0, 4)])
    assert values(reader.read(100)) == [*first, 1]  # the discarded one is skipped
    assert fake.consumer == (lead + 2) * STRIDE
    assert reader.unread() == 2
    assert reader.pending()  # what a stop's drain waits for
    fake.commit(0)
    assert values(reader.read(100)) == [3, 4]
    assert reader.unread() == 0


def test_respects_the_limit(ring: tuple[FakeRing, RingBufferReader]) -> None:
    fake, reader = ring
    fake.write([(0, i) for i in range(10)])
    assert values(reader.read(4)) == [0, 1, 2, 3]
    assert values(reader.read(100)) == [4, 5, 6, 7, 8, 9]


def test_records_that_wrap_around_the_end(ring: tuple[FakeRing, RingBufferReader]) -> None:
    fake, reader = ring
    per_lap = SIZE // STRIDE
    for lap in range(3):
        batch = [(0, lap * 1000 + i) for i in range(per_lap - 3)]
        fake.write(batch)
        assert values(reader.read(10_000)) == [v for _, v in batch]
    assert fake.consumer == fake.producer


PERF_SAMPLE, PERF_LOST = 9, 2


def perf_sample(records: PerfRecords, value: int) -> bytes:
    """A PERF_RECORD_SAMPLE carrying one ``Value`` record (raw size, then data)."""
    raw = struct.pack("<IQ", 8, value)
    head = struct.pack("<IHH", PERF_SAMPLE, 0, records.stride)
    return (head + raw).ljust(records.stride, b"\0")


@pytest.mark.parametrize("count", [3, FEW + 5])  # one by one, and in one pass
def test_perf_samples_decode_in_order_past_lost_record_notices(count: int) -> None:
    records = PerfRecords(layout_of(Value))
    lost = struct.pack("<IHHQQ", PERF_LOST, 0, 24, 0, 7)  # id, then 7 records lost
    half = count // 2
    data = b"".join(perf_sample(records, v) for v in range(half))
    data += lost + b"".join(perf_sample(records, v) for v in range(half, count))
    assert values(records.decode(data)) == list(range(count))
    plain = b"".join(perf_sample(records, v) for v in range(count))
    assert values(records.decode(plain)) == list(range(count))
