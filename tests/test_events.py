"""Event layout derivation: C struct text, offsets, and decoding, without root."""

from __future__ import annotations

import struct
from typing import Annotated

import numpy as np
import pytest

from flowtrace import Event, EventDefinitionError, layout_of
from flowtrace.ktypes import Char, comm, ktime_ns, s8, s32, s64, task_comm, task_pid, u8, u16, u64


class Mixed(Event, frozen=True):
    flag: u8
    ts: ktime_ns
    small: s8
    port: u16
    name: Annotated[str, Char(5)]
    delta: s64
    who: comm


def test_offsets_follow_c_natural_alignment() -> None:
    layout = layout_of(Mixed)
    offsets = {f.name: f.offset for f in layout.fields}
    assert offsets == {
        "flag": 0,
        "ts": 8,
        "small": 16,
        "port": 18,
        "name": 20,
        "delta": 32,
        "who": 40,
    }
    assert layout.size == 56
    assert layout.align == 8


def test_c_struct_text() -> None:
    assert layout_of(Mixed).c_struct() == (
        "struct ft_mixed {\n"
        "    u8 flag;\n"
        "    u64 ts;\n"
        "    s8 small;\n"
        "    u16 port;\n"
        "    char name[5];\n"
        "    s64 delta;\n"
        "    char who[16];\n"
        "};"
    )


def test_filled_fields_generate_fill_code() -> None:
    class Filled(Event, frozen=True):
        ts: ktime_ns
        pid: task_pid
        comm: task_comm
        ret: s32

    assert layout_of(Filled).c_fill("e").splitlines() == [
        "e.ts = bpf_ktime_get_ns();",
        "e.pid = bpf_get_current_pid_tgid() >> 32;",
        "bpf_get_current_comm(&e.comm, sizeof(e.comm));",
    ]


def _record(
    flag: int = 0,
    ts: int = 0,
    small: int = 0,
    port: int = 0,
    name: bytes = b"",
    delta: int = 0,
    who: bytes = b"",
) -> bytes:
    """Bytes as a C compiler lays out struct ft_mixed, padding spelled out."""
    return struct.pack("<B7xQbxH5s7xq16s", flag, ts, small, port, name, delta, who)


def test_decodes_padding_signed_values_and_strings() -> None:
    data = _record(
        flag=255, ts=2**64 - 1, small=-128, port=65535, name=b"abcde", delta=-(2**63), who=b"sync"
    ) + _record(name=b"ab\0zz", who=b"\xff\xfebad\0junk")
    first, second = layout_of(Mixed).decode_bytes(data)
    assert first == Mixed(255, 2**64 - 1, -128, 65535, "abcde", -(2**63), "sync")
    assert second.name == "ab"  # stops at the first NUL, ignores bytes after it
    assert second.who == "\ufffd\ufffdbad"  # invalid UTF-8 replaced
    assert second.delta == 0


def test_encode_is_the_inverse_of_decode() -> None:
    event = Mixed(1, 2, -3, 4, "hi", -5, "python3")
    layout = layout_of(Mixed)
    assert len(layout.encode(event)) == 56
    assert layout.decode_bytes(layout.encode(event)) == [event]


def test_decodes_records_inside_a_larger_stride() -> None:
    layout = layout_of(Mixed)
    stride = 8 + 56
    buf = b"".join(b"HDRHDRHD" + _record(port=p) for p in (1, 2, 3))
    records = np.frombuffer(buf, layout.dtype(header=8, stride=stride))
    assert [e.port for e in layout.decode(records)] == [1, 2, 3]


def test_one_by_one_decoding_gives_the_same_events() -> None:
    """decode_at (a read of a few records) agrees with the array decoder:
    padding, signed values, strings cut at NUL, invalid UTF-8 replaced."""
    layout = layout_of(Mixed)
    data = b"HDRHDRHD" + _record(
        flag=255, ts=2**64 - 1, small=-128, port=65535, name=b"abcde", delta=-(2**63), who=b"sync"
    ) + b"HDRHDRHD" + _record(name=b"ab\0zz", who=b"\xff\xfebad\0junk")
    records = np.frombuffer(data, layout.dtype(header=8, stride=8 + 56))
    assert layout.decode_at(data, [8, 8 + 64]) == layout.decode(records)
    assert layout.decode_at(data, [8 + 64]) == layout.decode(records)[1:]


def test_one_by_one_decoding_of_tagged_records_gives_each_member() -> None:
    from flowtrace.tagged import tagged_event

    class Start(Event, frozen=True):
        ts: u64

    class Stop(Event, frozen=True):
        ts: u64
        who: comm

    record, layout = tagged_event([Start, Stop])
    data = layout.encode(record(0, 5, 0, "")) + layout.encode(record(1, 0, 9, "dd"))
    assert layout.decode_at(data, [0, layout.size]) == [Start(5), Stop(9, "dd")]
    assert layout.decode_at(data, [layout.size]) == [Stop(9, "dd")]


def test_field_without_kernel_type_is_rejected() -> None:
    class Untyped(Event, frozen=True):
        pid: int

    with pytest.raises(EventDefinitionError, match=r"Untyped.pid: annotate it with a kernel type"):
        layout_of(Untyped)


def test_event_without_fields_is_rejected() -> None:
    class Empty(Event, frozen=True):
        pass

    with pytest.raises(EventDefinitionError, match="declares no fields"):
        layout_of(Empty)


@pytest.mark.parametrize("length", [0, -1, 2.5, "8", True, 4097, 10**6])
def test_char_length_is_a_whole_number_of_bytes_within_bounds(length: object) -> None:
    with pytest.raises(ValueError, match="a whole number from 1 to 4096"):
        Char(length)  # type: ignore[arg-type]


def test_a_record_larger_than_the_bpf_stack_allows_is_refused_in_one_line() -> None:
    class Big(Event, frozen=True):
        a: Annotated[str, Char(256)]
        b: Annotated[str, Char(256)]

    with pytest.raises(EventDefinitionError) as info:
        layout_of(Big)
    assert str(info.value) == (
        "Big: its record is 512 bytes, and a BPF program builds records on a 512-byte"
        " stack (at most 480): use shorter strings (Char(N), string_size=) or fewer fields"
    )


def test_events_are_immutable_and_untracked_by_gc() -> None:
    import gc

    event = Mixed(1, 2, 3, 4, "n", 5, "w")
    assert not gc.is_tracked(event)
    with pytest.raises(AttributeError):
        event.flag = 2  # type: ignore[misc]


def test_u64_max() -> None:
    class Wide(Event, frozen=True):
        v: u64

    assert layout_of(Wide).decode_bytes(b"\xff" * 8) == [Wide(2**64 - 1)]
