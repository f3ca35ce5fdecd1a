"""Typed sources without a kernel: format files parsed (real ones, copied from
a 6.18 kernel's tracefs into tests/formats), event types generated with the
naming rule, declared events checked, and recordings that rebuild a
generated type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import pytest

from flowtrace import (
    Arg,
    Event,
    EventDefinitionError,
    Pipeline,
    PipelineDefinitionError,
    layout_of,
    syscall_entry,
    tracepoint,
    tracepoints,
    uprobe,
    usdt,
)
from flowtrace.ktypes import Char, comm, ktime_ns, parse_c_type, s32, task_pid, u32, u64
from flowtrace.recorder import RecordingSource
from flowtrace.recording import MAX_FIELDS, MAX_TYPES, open_recording
from flowtrace.replay import ReplayError, replay
from flowtrace.schema import RecordEncoder, RecordingEnd, RecordingHeader
from flowtrace.sources.block import BlockComplete, BlockIssue
from flowtrace.tagged import tagged_event
from flowtrace.testing import CollectSink, ListSource
from flowtrace.tracefs_format import FieldKind, TracepointFormat, parse_format
from flowtrace.typed_events import task_field_names
from flowtrace.typed_sources import define_tracepoint

FORMATS = Path(__file__).with_name("formats")


def fmt(name: str) -> TracepointFormat:
    category, event = name.split(":")
    return parse_format((FORMATS / f"{category}.{event}.format").read_text(), category, event)


def fields(event: type[Event]) -> list[tuple[str, str]]:
    return [(f.name, f.ktype.spelled()) for f in layout_of(event).fields]


# -- parsing -----------------------------------------------------------------------


def test_sys_enter_write_format() -> None:
    own = fmt("syscalls:sys_enter_write").own_fields
    assert [(f.name, f.c_type, f.offset, f.size, f.signed, f.kind) for f in own] == [
        ("__syscall_nr", "int", 8, 4, True, FieldKind.INTEGER),
        ("fd", "unsigned int", 16, 8, False, FieldKind.INTEGER),
        ("buf", "const char *", 24, 8, False, FieldKind.POINTER),
        ("count", "size_t", 32, 8, False, FieldKind.INTEGER),
    ]
    common = [f.name for f in fmt("syscalls:sys_enter_write").fields if f.is_common]
    assert common == ["common_type", "common_flags", "common_preempt_count", "common_pid"]


def test_block_rq_issue_format_has_char_arrays_and_a_data_loc_string() -> None:
    kinds = {f.name: (f.kind, f.offset, f.size) for f in fmt("block:block_rq_issue").own_fields}
    assert kinds["rwbs"] == (FieldKind.CHARS, 34, 10)
    assert kinds["comm"] == (FieldKind.CHARS, 44, 16)
    assert kinds["cmd"] == (FieldKind.STRING, 60, 4)
    assert kinds["dev"] == (FieldKind.INTEGER, 8, 4)


def test_sched_process_exec_filename_is_a_data_loc_string() -> None:
    own = fmt("sched:sched_process_exec").own_fields
    assert [(f.name, f.c_type, f.kind) for f in own] == [
        ("filename", "__data_loc char[]", FieldKind.STRING),
        ("pid", "pid_t", FieldKind.INTEGER),
        ("old_pid", "pid_t", FieldKind.INTEGER),
    ]


def test_byte_arrays_are_not_strings() -> None:
    kinds = {f.name: f.kind for f in fmt("sock:inet_sock_set_state").own_fields}
    assert kinds["saddr"] is kinds["daddr_v6"] is FieldKind.UNSUPPORTED
    assert kinds["skaddr"] is FieldKind.POINTER


def test_an_unreadable_field_line_is_named() -> None:
    with pytest.raises(ValueError, match="unreadable format line 'field:int;'"):
        parse_format("name: x\nformat:\n\tfield:int;\n")


# -- generated events ----------------------------------------------------------------


def test_sys_enter_write_event_type() -> None:
    definition = define_tracepoint(fmt("syscalls:sys_enter_write"))
    assert definition.event.__name__ == "SysEnterWrite"
    assert fields(definition.event) == [
        ("ts", "u64"),
        ("pid", "u32"),
        ("tid", "u32"),
        ("comm", "char[16]"),
        ("syscall_nr", "s32"),
        ("fd", "u64"),
        ("buf", "u64"),
        ("count", "u64"),
    ]
    fill = layout_of(definition.event).c_fill("e")
    assert "e.ts = bpf_ktime_get_ns();" in fill
    assert "e.pid = bpf_get_current_pid_tgid() >> 32;" in fill
    body = definition.probe.body.splitlines()
    assert "e.count = *(u64 *)((char *)ctx + 32);  // size_t count" in body
    assert definition.unread == ()


def test_naming_rule_a_format_field_keeps_its_name() -> None:
    issue = define_tracepoint(fmt("block:block_rq_issue")).event
    names = [name for name, _ in fields(issue)]
    assert names[:4] == ["ts", "pid", "tid", "task_comm"]
    assert names[4:] == ["dev", "sector", "nr_sector", "bytes", "ioprio", "rwbs", "comm", "cmd"]
    assert dict(fields(issue))["cmd"] == "char[128]"
    assert "bpf_get_current_comm(&e.task_comm" in layout_of(issue).c_fill("e")
    exec_ = define_tracepoint(fmt("sched:sched_process_exec"), string_size=64).event
    assert [name for name, _ in fields(exec_)] == [
        *("ts", "task_pid", "tid", "comm", "filename", "pid", "old_pid")
    ]
    assert dict(fields(exec_))["filename"] == "char[64]"
    assert task_field_names(["pid", "task_pid"])["pid"] == "task_task_pid"


def test_data_loc_string_read_from_where_the_record_says() -> None:
    body = define_tracepoint(fmt("sched:sched_process_exec")).probe.body
    assert "u32 loc = *(u32 *)((char *)ctx + 8);" in body
    assert "(char *)ctx + (loc & 0xFFFF)" in body


def test_fields_without_a_kernel_type_are_listed_not_read() -> None:
    definition = define_tracepoint(fmt("sock:inet_sock_set_state"))
    assert [f.name for f in definition.unread] == ["saddr", "daddr", "saddr_v6", "daddr_v6"]
    assert "saddr" not in definition.event.__struct_fields__
    assert dict(fields(definition.event))["skaddr"] == "u64"


# -- declared events -----------------------------------------------------------------


class Write(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    fd: s32
    count: u64


class Misspelt(Event, frozen=True):
    pid: task_pid
    size: u64


class StringForInteger(Event, frozen=True):
    count: Annotated[str, Char(8)]


class PidNotFilled(Event, frozen=True):
    pid: u32


class Opened(Event, frozen=True):
    filename: Annotated[str, Char(64)]


def test_a_declared_event_reads_only_its_fields() -> None:
    definition = define_tracepoint(fmt("syscalls:sys_enter_write"), event=Write)
    assert definition.event is Write
    assert definition.probe.body.splitlines() == [
        "e.fd = *(u64 *)((char *)ctx + 16);  // unsigned int fd",
        "e.count = *(u64 *)((char *)ctx + 32);  // size_t count",
    ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            Misspelt,
            "Misspelt.size: tracepoint syscalls:sys_enter_write has no field 'size' (fields:"
            " ts: ktime_ns, pid: task_pid, tid: task_tid, comm: task_comm, syscall_nr: s32,"
            " fd: u64, buf: u64, count: u64)",
        ),
        (
            StringForInteger,
            "StringForInteger.count: declared Char(8), but count of tracepoint"
            " syscalls:sys_enter_write is an integer (u64); fields: ts: ktime_ns",
        ),
        (PidNotFilled, "PidNotFilled.pid: declare it task_pid (filled automatically);"),
    ],
)
def test_a_declared_event_that_does_not_fit_is_one_line(event: type[Event], message: str) -> None:
    with pytest.raises(EventDefinitionError) as raised:
        define_tracepoint(fmt("syscalls:sys_enter_write"), event=event)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_pointer_declared_as_a_string_reads_what_it_points_to() -> None:
    body = define_tracepoint(fmt("syscalls:sys_enter_openat"), event=Opened).probe.body
    assert body.startswith(
        "bpf_probe_read_user_str(&e.filename, sizeof(e.filename),"
        " (void *)*(u64 *)((char *)ctx + 24));"
    )


# -- building reads nothing -----------------------------------------------------------


def test_building_reads_no_tracefs_and_a_declared_event_is_known() -> None:
    source = tracepoint("syscalls:no_such_tracepoint", event=Write)
    assert source.event is Write
    assert source.stage_name() == "syscalls:no_such_tracepoint"
    assert source.replay_types() == (Write,)
    assert syscall_entry("write").replay_types() == ("SysEnterWrite",)


@pytest.mark.parametrize("name", ["sys_enter_write", "a:b:c", ":x", "x:"])
def test_a_tracepoint_name_needs_a_category(name: str) -> None:
    with pytest.raises(PipelineDefinitionError, match="give it as category:name"):
        tracepoint(name)


def test_argument_declarations_are_checked_when_built() -> None:
    with pytest.raises(PipelineDefinitionError, match="argument 'n': declare it with a kernel"):
        uprobe("/bin/true", "main", args={"n": int})
    with pytest.raises(PipelineDefinitionError, match="argument 'ts': declare it"):
        uprobe("/bin/true", "main", args={"ts": ktime_ns})
    with pytest.raises(PipelineDefinitionError, match="uprobes read arguments 1 to 6"):
        uprobe("/bin/true", "main", args={"n": Arg(7, u64)})
    with pytest.raises(PipelineDefinitionError, match="two arguments read the same position"):
        uprobe("/bin/true", "main", args={"n": u64, "m": Arg(1, u32)})
    with pytest.raises(PipelineDefinitionError, match="give the probe as provider:name"):
        usdt(1, "request", args={})
    with pytest.raises(PipelineDefinitionError, match="the position is 1-based"):
        Arg(0, u64)


def test_argument_sources_generate_their_event() -> None:
    args = {"port": Arg(4, s32), "path": Arg(6, Char(128))}
    source = usdt("/bin/true", "node:http__server__request", args=args)
    assert source.event.__name__ == "HttpServerRequest"
    assert fields(source.event)[4:] == [("port", "s32"), ("path", "char[128]")]
    (probe,) = source.probes
    params = [(p.name, p.c_type) for p in probe.params]
    assert params == [("ft_arg_port", "s32"), ("ft_arg_path", "u64")]
    assert "bpf_probe_read_user_str(&e.path, sizeof(e.path), (void *)ft_arg_path);" in probe.body
    named = uprobe("/bin/true", "visit", args={"pid": u32, "comm": comm})
    assert [n for n, _ in fields(named.event)] == [
        *("ts", "task_pid", "tid", "task_comm", "pid", "comm")
    ]


# -- recordings of generated types ----------------------------------------------------


def test_a_kernel_type_spelling_round_trips() -> None:
    for spelled in ["u8", "s16", "u32", "s64", "char[16]", "char[256]"]:
        assert parse_c_type(spelled).spelled() == spelled
    for bad in ["int", "char[0]", "char[x]", "char[99999999]", "u128"]:
        with pytest.raises(ValueError, match="not a kernel type"):
            parse_c_type(bad)


def write_recording(path: Path, event: type[Event], events: list[Event]) -> None:
    encoder = RecordEncoder()
    header = RecordingHeader(
        source="syscalls:sys_enter_write",
        event=event.__name__,
        fields=fields(event),
        clock="monotonic",
        start=1.0,
    )
    lines = [encoder.json_line(header), encoder.json_lines(events, at=1.5)]
    end = RecordingEnd(events=len(events), received=len(events), lost=0)
    lines.append(encoder.json_line(end, at=2.0))
    path.write_bytes(b"".join(lines))


@pytest.mark.anyio
async def test_a_generated_type_is_rebuilt_from_the_recording(tmp_path: Path) -> None:
    generated = define_tracepoint(fmt("syscalls:sys_enter_write")).event
    events = [generated(10 + i, 42, 42, "dd", 1, 1, 0x1000, 512 * i) for i in range(3)]
    recording = tmp_path / "write.rec"
    write_recording(recording, generated, events)
    source = syscall_entry("write")
    again = replay(Pipeline(source, [], CollectSink()), recording)
    await again.run()
    assert "probes" not in vars(source)  # never defined: no format file was read
    sink = again.sink
    assert isinstance(sink, CollectSink)
    assert [msgspec.structs.asdict(e) for e in sink.items] == [
        msgspec.structs.asdict(e) for e in events
    ]
    assert type(sink.items[0]).__name__ == "SysEnterWrite"


@pytest.mark.anyio
async def test_a_recording_of_another_tracepoint_is_refused(tmp_path: Path) -> None:
    generated = define_tracepoint(fmt("sched:sched_process_exec")).event
    recording = tmp_path / "exec.rec"
    write_recording(recording, generated, [])
    with pytest.raises(ReplayError, match="recording holds SchedProcessExec events, the pipeline's"
                       " source emits SysEnterWrite"):
        replay(Pipeline(syscall_entry("write"), [], CollectSink()), recording)


@pytest.mark.parametrize(
    ("fields_", "problem"),
    [
        (
            [["ts", "float"]],
            "bad event type in the header: not a kernel type: 'float' (u8..u64, s8..s64, char[N])",
        ),
        (
            [["__class__", "u32"]],
            "bad event type in the header: SysEnterWrite: '__class__' is not a usable field name"
            " (an identifier, not starting with _)",
        ),
        (
            [["a b", "u32"]],
            "bad event type in the header: SysEnterWrite: 'a b' is not a usable field name"
            " (an identifier, not starting with _)",
        ),
        (
            [["x", "u32"], ["x", "u64"]],
            "bad event type in the header: SysEnterWrite: field 'x' appears twice",
        ),
        (None, "the header lists no event type and fields to rebuild"),
        (  # as many fields as a header may list: refused by the record's size instead
            [[f"f{i}", "u8"] for i in range(MAX_FIELDS)],
            "bad event type in the header: SysEnterWrite: its record is 1024 bytes, and a BPF"
            " program builds records on a 512-byte stack (at most 480): use shorter strings"
            " (Char(N), string_size=) or fewer fields",
        ),
        ([[f"f{i}", "u8"] for i in range(MAX_FIELDS + 1)], "1025 fields, more than 1024"),
    ],
)
def test_a_forged_header_is_refused(
    tmp_path: Path, fields_: list[list[str]] | None, problem: str
) -> None:
    header = {"source": "s", "event": "SysEnterWrite", "fields": fields_, "clock": "x", "start": 0}
    recording = tmp_path / "forged.rec"
    encoder = RecordEncoder()
    recording.write_bytes(
        encoder.json_line(msgspec.convert(header, RecordingHeader))
        + encoder.json_line(RecordingEnd(events=0, received=0, lost=0), at=0.0)
    )
    with pytest.raises(ReplayError) as info:
        replay(Pipeline(syscall_entry("write"), [], CollectSink()), recording)
    fix = "record it again with flowtrace run --record"
    assert str(info.value) == f"{recording}:1: {problem}; {fix}"


def header_of(events: list[list[Any]]) -> bytes:
    """A recording of no events whose header lists ``events`` ([name, fields])."""
    header: dict[str, Any] = {"source": "s", "event": None, "fields": None, "events": events}
    header |= {"clock": "x", "start": 0}
    encoder = RecordEncoder()
    return encoder.json_line(msgspec.convert(header, RecordingHeader)) + encoder.json_line(
        RecordingEnd(events=0, received=0, lost=0), at=0.0
    )


def test_a_header_is_rebuilt_with_up_to_max_types(tmp_path: Path) -> None:
    most = tmp_path / "most.rec"
    most.write_bytes(header_of([[f"T{t}", [["x", "u8"]]] for t in range(MAX_TYPES)]))
    reader = open_recording(most)
    assert [t.__name__ for t in reader.types] == [f"T{t}" for t in range(MAX_TYPES)]
    assert reader.check().events == 0
    more = tmp_path / "more.rec"
    more.write_bytes(header_of([[f"T{t}", [["x", "u8"]]] for t in range(MAX_TYPES + 1)]))
    with pytest.raises(ReplayError) as info:
        open_recording(more)
    assert str(info.value) == (
        f"{more}:1: 65 event types, more than 64; record it again with flowtrace run --record"
    )


@pytest.mark.anyio
async def test_recording_a_generated_type_lists_its_fields(tmp_path: Path) -> None:
    generated = define_tracepoint(fmt("block:block_rq_issue")).event
    event = generated(1, 2, 3, "kworker/0:1", 8 << 20, 2048, 8, 4096, 0, "W", "dd", "")

    class Issues(ListSource[Any]):
        def event_type(self) -> type[Any]:
            return generated

    source = Issues([event])
    recording = tmp_path / "issue.rec"
    await Pipeline(RecordingSource(source, recording), [], CollectSink()).run()
    header = msgspec.json.decode(recording.read_bytes().splitlines()[0])["data"]
    assert header["event"] == "BlockRqIssue"
    assert header["fields"][3] == ["task_comm", "char[16]"]
    assert header["fields"][-3:] == [
        ["rwbs", "char[10]"],
        ["comm", "char[16]"],
        ["cmd", "char[128]"],
    ]


# -- several tracepoints, one buffer -------------------------------------------------


def test_tagged_records_decode_as_their_own_types_in_order() -> None:
    issue = define_tracepoint(fmt("block:block_rq_issue"), event=BlockIssue, tag=0)
    complete = define_tracepoint(fmt("block:block_rq_complete"), event=BlockComplete, tag=1)
    assert issue.probe.body.splitlines()[:2] == [
        "e.ft_member = 0;",
        "e.m0_dev = *(u32 *)((char *)ctx + 8);  // dev_t dev",
    ]
    assert complete.probe.body.splitlines()[0] == "e.ft_member = 1;"
    record, layout = tagged_event([BlockIssue, BlockComplete])
    assert record.__name__ == "BlockIssueOrBlockComplete"
    assert "e.m0_ts = bpf_ktime_get_ns();" in layout.c_fill("e")
    assert "e.m1_ts = bpf_ktime_get_ns();" in layout.c_fill("e")
    raw = np.zeros(3, dtype=layout.dtype())
    raw["ft_member"] = [0, 1, 0]
    raw["m0_ts"], raw["m0_sector"], raw["m0_bytes"], raw["m0_rwbs"] = [5, 0, 9], 8, 4096, b"WS"
    raw["m1_ts"][1], raw["m1_dev"][1], raw["m1_sector"][1] = 7, 3, 8
    assert layout.decode(raw) == [
        BlockIssue(5, 0, 8, 4096, "WS"),
        BlockComplete(7, 3, 8),
        BlockIssue(9, 0, 8, 4096, "WS"),
    ]


@pytest.mark.anyio
async def test_several_generated_types_record_and_replay(tmp_path: Path) -> None:
    issue = define_tracepoint(fmt("block:block_rq_issue")).event
    complete = define_tracepoint(fmt("block:block_rq_complete")).event
    events = [
        issue(1, 2, 3, "dd", 8, 16, 8, 4096, 0, "W", "dd", ""),
        complete(2, 0, 0, "swapper/0", 8, 16, 8, 0, 0, "W", ""),
    ]

    class Requests(ListSource[Any]):
        def event_types(self) -> tuple[type[Any], ...]:
            return (issue, complete)

    source = Requests(events)
    recording = tmp_path / "requests.rec"
    await Pipeline(RecordingSource(source, recording), [], CollectSink()).run()
    header = msgspec.json.decode(recording.read_bytes().splitlines()[0])["data"]
    assert header["event"] is None and [n for n, _ in header["events"]] == [
        "BlockRqIssue",
        "BlockRqComplete",
    ]
    typed = tracepoints("block:block_rq_issue", "block:block_rq_complete")
    again = replay(Pipeline(typed, [], CollectSink()), recording)
    await again.run()
    sink = again.sink
    assert isinstance(sink, CollectSink)
    assert [type(e).__name__ for e in sink.items] == ["BlockRqIssue", "BlockRqComplete"]
    assert [msgspec.structs.asdict(e) for e in sink.items] == [
        msgspec.structs.asdict(e) for e in events
    ]
    assert "probes" not in vars(typed)
    declared = tracepoints(("block:block_rq_issue", BlockIssue), "block:block_rq_complete")
    with pytest.raises(ReplayError, match="recording holds BlockRqIssue, BlockRqComplete events,"
                       " the pipeline's source emits BlockIssue, BlockRqComplete"):
        replay(Pipeline(declared, [], CollectSink()), recording)
    # a generated type the recording lacks, beside a declared one: refused
    # before reading a line, naming each type the source emits
    lacking = tracepoints(("block:block_rq_issue", BlockIssue), "sched:sched_process_exec")
    with pytest.raises(ReplayError) as info:
        replay(Pipeline(lacking, [], CollectSink()), recording)
    assert str(info.value) == (
        f"{recording}:1: recording holds BlockRqIssue, BlockRqComplete events, the pipeline's"
        " source emits BlockIssue, SchedProcessExec; replay it into the pipeline that recorded"
        " it, or record this one"
    )


def test_a_format_field_named_like_a_keyword_gets_an_underscore() -> None:
    event = define_tracepoint(fmt("syscalls:sys_enter_ioperm")).event
    assert [n for n, _ in fields(event)][-4:] == ["syscall_nr", "from_", "num", "turn_on"]


def test_a_record_field_cannot_be_a_c_keyword() -> None:
    class Bad(Event, frozen=True):
        int: u64

    with pytest.raises(EventDefinitionError, match="'int' cannot name a field of a kernel record"):
        layout_of(Bad)
