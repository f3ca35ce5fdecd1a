"""Mutation testing of flowtrace: how many deliberate one-line bugs the tests catch.

    nice -n 10 VENV/bin/python scripts/mutation.py [--sample N] [--areas a,b] [--seed S]

VENV has flowtrace's test extra and the ``mutation`` extra (mutmut) installed,
with system site packages for bcc; run as root (the kernel tests attach
probes). See README.md, "Mutation testing". Not part of CI: a full run takes
hours on two cores.

Python areas: mutmut generates the mutants of each area's files; each mutant
is applied to a scratch copy of the repository (tracked files) and only the
test files mapped to its area run against it (``pytest -x``; for a file in
``TESTS_BY_FILE``, only those of them that import it). A failing run
kills it; a run that passes lets it survive. Areas in ``COVERAGE_MAPPED``
first run only the files that reach the mutated function (see there).
Applying the mutant to the
source itself (rather than mutmut's own runner, which switches mutants at run
time) keeps mutants of default arguments and of code that runs at import
honest, and lets kernel tests run in their own process.

C area: mutants of the lessons' C bodies, from a small list of operators of
our own (operands of ``-`` swapped, comparisons moved by one, ``==``/``!=``
flipped, integer constants moved by one, statements dropped), applied to the
generated program text just before bcc compiles it (a pytest plugin), then
the lesson's kernel tests run. Mutants bcc cannot compile are counted as
invalid, not killed.

With ``--sample N`` each area runs N mutants drawn at random (``--seed``); the
score is then a sample's, and is printed as such. Survivors listed in
EQUIVALENT (with the change they were judged for) are reported with their
reason and left out of the score.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# area -> (files mutated, test files that exercise them)
PYTHON_AREAS: dict[str, tuple[list[str], list[str]]] = {
    "operators": (
        ["flowtrace/operators/*.py"],
        [
            "tests/test_operators_api.py",
            "tests/test_operators_basic.py",
            "tests/test_operators_buckets.py",
            "tests/test_operators_console.py",
            "tests/test_operators_count.py",
            "tests/test_operators_custom.py",
            "tests/test_operators_definitions.py",
            "tests/test_operators_extras.py",
            "tests/test_operators_forms.py",
            "tests/test_operators_join.py",
            "tests/test_operators_merge.py",
            "tests/test_operators_running.py",
            "tests/test_operators_runs.py",
            "tests/test_operators_windows.py",
            "tests/test_operators_kernel.py",  # histograms against bcc's own, in the kernel
            "tests/test_replay_jumps.py",  # windows across clock jumps: the empty-run bound
        ],
    ),
    "transport": (
        ["flowtrace/transport.py"],
        ["tests/test_transport.py", "tests/test_kernel_core.py"],
    ),
    "kernel_source": (
        ["flowtrace/kernel_source.py"],
        [  # the tests without a kernel first: most mutants fail them in seconds
            "tests/test_pushdown_plan.py",  # placement and what explain says of it
            "tests/test_kernel_core.py",
            "tests/test_kernel_lessons.py",
            "tests/test_reorder_kernel.py",  # the reorder buffer the source runs
        ],
    ),
    "recording": (
        ["flowtrace/recording.py"],
        [
            "tests/test_replay.py",
            "tests/test_replay_fuzz.py",
            "tests/test_replay_jumps.py",
            "tests/test_typed_sources.py",  # replays recordings of typed sources
            "tests/test_plot.py",  # reads recordings it plots
        ],
    ),
    "sinks": (
        ["sinks/*.py"],
        [
            "tests/test_sink_console.py",
            "tests/test_sink_metrics.py",
            "tests/test_sink_nats.py",
            "tests/test_sink_ndjson.py",
            "tests/test_sink_netio.py",
            "tests/test_sink_otlp.py",
            "tests/test_sink_socket.py",
            "tests/test_sink_socket_failures.py",
            "tests/test_sink_tee.py",
            "tests/test_operators_console.py",
            "tests/test_output_files.py",
            "tests/test_stacks.py",
            "tests/test_live_text.py",  # fast runs that print through the console sink
            "tests/test_replay_jumps.py",
        ],
    ),
}

# Areas whose mutants run only the test files that reach the mutated function
# (measured with coverage on the unmutated copy), fastest file first. A mutant
# that survives them runs the area's whole list again, so the selection only
# saves time and never turns a kill into a survivor.
COVERAGE_MAPPED = {"operators"}

# a mutated file -> those of its area's test files that import it (directly,
# through another module, or in a ``flowtrace`` process they start, such as
# the NATS tests' agent writing NDJSON); a file not listed runs the whole list
TESTS_BY_FILE: dict[str, list[str]] = {
    "sinks/console.py": [
        "tests/test_operators_console.py",
        "tests/test_sink_console.py",
        "tests/test_sink_ndjson.py",
        "tests/test_live_text.py",
        "tests/test_replay_jumps.py",
    ],
    "sinks/metrics.py": ["tests/test_sink_metrics.py"],
    "sinks/nats.py": ["tests/test_sink_nats.py"],
    "sinks/ndjson.py": [
        "tests/test_sink_ndjson.py",
        "tests/test_sink_tee.py",
        "tests/test_sink_nats.py",
    ],
    "sinks/netio.py": ["tests/test_sink_netio.py", "tests/test_sink_socket.py"],
    "sinks/otlp.py": ["tests/test_sink_otlp.py"],
    "sinks/reporting.py": [
        "tests/test_sink_ndjson.py",
        "tests/test_sink_socket.py",
        "tests/test_sink_tee.py",
        "tests/test_sink_nats.py",
    ],
    "sinks/socket.py": ["tests/test_sink_socket.py", "tests/test_sink_socket_failures.py"],
    "sinks/stack_lines.py": ["tests/test_stacks.py"],
    "sinks/stacks.py": ["tests/test_stacks.py"],
}

# lesson source -> the kernel lesson tests that drive it (-k expression)
C_LESSONS: dict[str, str] = {
    "sources/disk.py": "disksnoop_sees",
    "sources/syscalls.py": "sync_lessons",
    "sources/urandom.py": "urandomread",
    "sources/reads.py": "vfsreadlat",
    "sources/libc.py": "strlen",
    "sources/processes.py": "hello",
}

# surviving mutants that cannot change behaviour, by mutant name: (the change
# judged, why). mutmut numbers a function's mutants in order, so editing the
# function renumbers them: a name whose change is no longer the one judged
# counts as a survivor again until it is judged anew.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "flowtrace.transport.x__perf_event_open__mutmut_21": (
        "flags=_PERF_ATTR_WATERMARK, -> (dropped)",
        "no wakeup watermark: the reader is woken per record, reads the same records"
    ),
    "flowtrace.transport.xǁRingBufferReaderǁ__init____mutmut_72": (
        "self._producer = memoryview(self._data)[:8].cast(\"Q\") -> self._producer = "
        "memoryview(self._data)[:8].cast(\"q\")",
        "producer position read signed: equal below 2**63 bytes written"
    ),
    "flowtrace.transport.xǁRingBufferReaderǁread__mutmut_12": (
        "if count <= 0: -> if count < 0:",
        "read(0) only: every caller asks for a positive batch limit"
    ),
    "flowtrace.recording.xǁ_Decodingǁof__mutmut_23": (
        "issubclass(event, Event), -> None,",
        "an Event built from keywords rather than positions: the same event"
    ),
    "flowtrace.recording.x__strict_type__mutmut_29": (
        "high = _INT64_MAX -> high = None",
        "a u64 field's decode bound: Meta(ge=0) either way (2**64-1 is checked after decoding)"
    ),
    "flowtrace.recording.xǁ_Decodingǁof__mutmut_10": (
        '"EventLine", [("v", int), ("type", str), ("name", str), ("at", float), ("data", '
        'strict)] -> "EVENTLINE", [("v", int), ("type", str), ("name", str), ("at", float), '
        '("data", strict)]',
        "the name of an internal decoding struct: never shown"
    ),
    "flowtrace.kernel_source.x__drain__mutmut_3": (
        "while anyio.current_time() < deadline: -> while anyio.current_time() <= deadline:",
        "one more drain read at the deadline's exact instant: the same records"
    ),
    "flowtrace.transport.x__perf_event_open__mutmut_4": (
        "raise OSError(errno.ENOSYS, \"perf_event_open: unsupported architecture\") -> raise "
        "OSError(\"perf_event_open: unsupported architecture\")",
        "the errno of the refusal on an architecture without perf_event_open's number: not "
        "reachable on x86-64"
    ),
    "sinks.ndjson.xǁNdjsonSinkǁclose__mutmut_1": (
        "if self._fd < 0: -> if self._fd <= 0:",
        "descriptor 0 is standard input, open for the whole run: never the sink's"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_14": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = None",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_15": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(None, \"no address\")",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_16": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(errno.EHOSTUNREACH, None)",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_17": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(\"no address\")",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_18": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(errno.EHOSTUNREACH, )",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_19": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(errno.EHOSTUNREACH, \"XXno addressXX\")",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁopen__mutmut_20": (
        "error: OSError = OSError(errno.EHOSTUNREACH, \"no address\") -> error: OSError = "
        "OSError(errno.EHOSTUNREACH, \"NO ADDRESS\")",
        "the error kept for an empty address list: getaddrinfo raises rather than return "
        "none, so it is always replaced before it is raised"
    ),
    "sinks.netio.xǁConnectionǁ__init____mutmut_11": (
        "self._ack_base = self._acked() if address.kind == \"tcp\" else 0 -> self._ack_base = "
        "self._acked() if address.kind == \"tcp\" else 1",
        "the acknowledged-bytes base of a non-TCP connection: read only for TCP"
    ),
    "sinks.netio.xǁConnectionǁ_acked__mutmut_9": (
        "if len(info) < _TCPI_BYTES_ACKED + 8: -> if len(info) <= _TCPI_BYTES_ACKED + 8:",
        "tcp_info exactly 128 bytes long: never (tcpi_bytes_received came with bytes_acked)"
    ),
    "sinks.console.xǁConsoleSinkǁwrite__mutmut_2": (
        "line = self.line -> line = None",
        "the one-line fast path off: the general path prints line(event) for the same events"
    ),
    "sinks.console.xǁConsoleSinkǁwrite__mutmut_27": (
        "written = 0 -> written = 1",
        "the encoding error policy when sys.stdout has none: a TextIOWrapper always has one"
    ),
    "sinks.nats.xǁNatsSinkǁopen__mutmut_30": (
        "self._subject = self.describe_subject(chain[0].name if chain else \"pipeline\") -> "
        "self._subject = self.describe_subject(chain[0].name if chain else \"PIPELINE\")",
        "the subject's fallback for a run without stages: a run's chain starts with its source"
    ),
    "sinks.nats.xǁNatsSinkǁopen__mutmut_29": (
        "self._subject = self.describe_subject(chain[0].name if chain else \"pipeline\") -> "
        "self._subject = self.describe_subject(chain[0].name if chain else \"XXpipelineXX\")",
        "the subject's fallback for a run without stages: a run's chain starts with its source"
    ),
    "sinks.nats.x_stream_config__mutmut_14": (
        "discard=DiscardPolicy.OLD, -> (dropped)",
        "discard=OLD left out: nats-py's StreamConfig defaults to DiscardPolicy.OLD"
    ),
    "sinks.otlp.xǁOtlpSinkǁwrite__mutmut_48": (
        "scope_metrics=[ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url=\"\")], -> "
        "scope_metrics=[ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url=None)],",
        "a scope's schema URL None instead of empty: the exporter encodes both as empty"
    ),
    "sinks.socket.xǁSocketSinkǁwrite__mutmut_25": (
        "if self._conn is None and time.monotonic() >= self._next_attempt: -> if self._conn "
        "is None and time.monotonic() > self._next_attempt:",
        "> instead of >= against the next attempt's time: equal float clock readings only"
    ),
    "sinks.netio.xǁConnectionǁ_acked__mutmut_11": (
        "if len(info) < _TCPI_BYTES_ACKED + 8: -> if len(info) < _TCPI_BYTES_ACKED + 9:",
        "tcp_info 128 bytes long: never (tcpi_bytes_received came with bytes_acked)"
    ),
    "sinks.otlp.xǁOtlpSinkǁopen__mutmut_17": (
        "self._pipeline = self.pipeline or (chain[0].name if chain else \"pipeline\") -> "
        "self._pipeline = self.pipeline or (chain[0].name if chain else \"PIPELINE\")",
        "the pipeline's fallback for a run without stages: a run's chain starts with its source"
    ),
    "sinks.nats.xǁNatsSinkǁ_connect__mutmut_20": (
        "closed_cb=_quiet_closed, / ) -> )",
        "no closed callback instead of one that does nothing: nats-py calls none then"
    ),
    "sinks.netio.x__connect__mutmut_17": (
        "raise OSError(code, errno.errorcode.get(code, str(code))) -> raise OSError(code, "
        "errno.errorcode.get(code, ))",
        "the fallback text for an errno errno.errorcode lacks: connect returns known ones"
    ),
    "sinks.socket.xǁSocketSinkǁ_send_stream__mutmut_40": (
        "self._failed(\"interrupted mid-record\", report=False) -> self._failed(\"interrupted "
        "mid-record\", report=None)",
        "report=None instead of False: the change is reported only when report is true"
    ),
    "sinks.nats.xǁNatsSinkǁ_message__mutmut_50": (
        "HEADER_PIPELINE: self._subject.rsplit(\".\", 1)[-1], -> HEADER_PIPELINE: "
        "self._subject.rsplit(\".\", None)[-1],",
        "the subject's last token, split more than once from the right: the same token"
    ),
    "sinks.nats.xǁNatsSinkǁ_message__mutmut_52": (
        "HEADER_PIPELINE: self._subject.rsplit(\".\", 1)[-1], -> HEADER_PIPELINE: "
        "self._subject.rsplit(\".\", )[-1],",
        "the subject's last token, split more than once from the right: the same token"
    ),
    "sinks.nats.xǁNatsSinkǁ_message__mutmut_55": (
        "HEADER_PIPELINE: self._subject.rsplit(\".\", 1)[-1], -> HEADER_PIPELINE: "
        "self._subject.rsplit(\".\", 2)[-1],",
        "the subject's last token, split more than once from the right: the same token"
    ),
    "flowtrace.operators.join.xǁJoinǁ_join__mutmut_15": (
        "flags = zip(batch, self.is_start(batch), self.is_complete(batch), strict=True) -> "
        "flags = zip(batch, self.is_start(batch), self.is_complete(batch), strict=None)",
        "strict=None: the zipped sequences have one length by construction"
    ),
    "flowtrace.operators._window_runs.xǁEmitterǁemit_empty__mutmut_12": (
        "self._count(last, count) -> self._count(None, count)",
        "the limit counts no events after None: a run of empty windows starts once every "
        "interval holding events was emitted and released"
    ),
    "flowtrace.operators.custom.xǁ_GeneratorOperatorǁrun__mutmut_2": (
        "current: Iterator[In] = iter(()) -> current: Iterator[In] = None",
        "no batch yet is None, not an empty iterator: length_hint gives 0 for both"
    ),
    "flowtrace.operators.windows.xǁWindowǁfinish__mutmut_1": (
        "return [] if self._windows.stopped else self._run.finish() -> return [] if "
        "(self._windows.stopped) and False else self._run.finish()",
        "a stopped run's finish emits nothing either: its state was cleared at the limit"
    ),
    "flowtrace.operators._window_runs.xǁEventTimeRunǁ_emit_through__mutmut_14": (
        "first = self.closed + 1 if self.closed is not None else min(self.state.accs, "
        "default=0) -> first = self.closed + 1 if self.closed is not None else "
        "min(self.state.accs, default=1)",
        "the first window when nothing was settled and no interval holds events: none is "
        "emitted from 0 or from 1"
    ),
    "flowtrace.operators.buckets.xǁLog2ǁadd__mutmut_16": (
        "if min(values) < 0 or max(values) > U64: -> if min(values) < 1 or max(values) > U64:",
        "a 0 (or a float below 1) takes the u64 conversion, which gives it the same slot"
    ),
    "flowtrace.operators.buckets.xǁLog2ǁadd__mutmut_17": (
        "if min(values) < 0 or max(values) > U64: -> if min(values) < 0 or max(None) > U64:",
        "max(None) raises TypeError, which takes the u64 conversion: the same slots"
    ),
    "flowtrace.operators.buckets.xǁLog2ǁadd__mutmut_25": (
        "slots = Counter(map(int.bit_length, values)) -> slots = Counter(map(values))",
        "map() of one argument raises TypeError, which takes the u64 conversion: the same slots"
    ),
    "flowtrace.operators.buckets.xǁLog2ǁadd__mutmut_15": (
        "if min(values) < 0 or max(values) > U64: -> if min(values) <= 0 or max(values) > U64:",
        "a 0 takes the u64 conversion, which gives it the same slot"
    ),
    "flowtrace.operators._fields.x__callable_name__mutmut_4": (
        "name = getattr(fn, \"__name__\", \"\") -> name = getattr(fn, \"__name__\", None)",
        "a callable without __name__ gets None rather than '': both are no name"
    ),
    "flowtrace.operators.buckets.xǁLog2ǁnew__mutmut_4": (
        "return [0] * (LOG2_SLOTS + 1)  # the slots, then the values' sum -> return [0] * "
        "(LOG2_SLOTS + 2)  # the slots, then the values' sum",
        "one more counter after the sum: nothing reads past the sum"
    ),
    "flowtrace.operators._window_runs.xǁEventTimeRunǁprocess__mutmut_26": (
        "for event, ts in zip(batch, stamps, strict=True): -> for event, ts in zip(batch, "
        "stamps, strict=None):",
        "strict=None: the stamps are one per event of the batch by construction"
    ),
    "flowtrace.operators.windows.xǁWindowǁopen__mutmut_9": (
        "panes = self.every.panes if self.every is not None else 1 -> panes = "
        "self.every.panes if self.every is not None else 2",
        "a whole-stream window spans 2 intervals, not 1: it only ever folds into interval 0"
    ),
    "flowtrace.transport.xǁPerfRecordsǁdecode__mutmut_19": (
        "headers = np.frombuffer(data, self._headers, count) -> headers = np.frombuffer(data,"
        " self._headers, )",
        "the headers read without a count: data is count records long whenever they are read"
    ),
    "flowtrace.transport.xǁPerfRecordsǁdecode__mutmut_28": (
        "np.all((headers[\"type\"] == _PERF_RECORD_SAMPLE) & (headers[\"size\"] == self.stride)) "
        "-> np.all((headers[\"type\"] == _PERF_RECORD_SAMPLE) & (headers[\"size\"] != "
        "self.stride))",
        "the uniform-records check fails: the general path decodes the same records"
    ),
    "flowtrace.transport.xǁPerfRecordsǁ__init____mutmut_36": (
        "\"offsets\": [0, 6], -> \"OFFSETS\": [0, 6],",
        "the header's size read at the wrong offset: the uniform-records check fails and the "
        "general path decodes the same records"
    ),
    "flowtrace.kernel_source.xǁKernelSourceǁ_pump__mutmut_23": (
        "small = True  # the last read kept up, so reading the in-flight count pays -> small = "
        "None  # the last read kept up, so reading the in-flight count pays",
        "the in-flight count not read before the first read: its events wait for the window,"
        " the same events in the same order"
    ),
    "flowtrace.transport.xǁPerfRecordsǁ__init____mutmut_37": (
        '"offsets": [0, 6], -> "offsets": [1, 6],',
        "the header's type read at the wrong offset: the uniform-records check fails and the"
        " general path decodes the same records"
    ),
    "flowtrace.transport.xǁPerfRecordsǁdecode__mutmut_21": (
        'np.all((headers["type"] == _PERF_RECORD_SAMPLE) & (headers["size"] == self.stride)) -> '
        "np.all(None)",
        "the uniform-records check fails: the general path decodes the same records"
    ),
    "flowtrace.kernel_source.xǁKernelSourceǁ_pump__mutmut_36": (
        "small = read < SMALL_BATCH -> small = read <= SMALL_BATCH",
        "the in-flight count also read after a read of exactly 512 records: a system call "
        "more, the same events in the same order"
    ),
    "flowtrace.kernel_source.xǁKernelSourceǁ_pump__mutmut_53": (
        "pause = gathering.after_read(read, now) -> pause = None",
        "no pause to let records gather: the same records, read as they come"
    ),
    "flowtrace.kernel_source.xǁKernelSourceǁ_pump__mutmut_70": (
        "held = None if reorder is None else reorder.wait(time.monotonic_ns()) -> held = None",
        "held events go at the next wake-up, not at their due time: the same events, later"
    ),
}

# surviving C mutants that cannot change behaviour, by "source: change made": why
_FW = r"return rwbs\[0\] == 'W' \|\| \(rwbs\[0\] == 'F' && rwbs\[1\] == 'W'\);"
C_EQUIVALENT: list[tuple[str, str]] = [
    (
        r"sources/\w+\.py: (BPF_\w+\(.*, )\d+\);(.*) -> \1\d+\);\2",
        "a table's capacity by one: none is filled",
    ),
    (r"sources/urandom\.py: u8 one = 1; -> u8 one = 2;", "a presence flag: only looked up"),
    (
        r"sources/urandom\.py: return 1; -> return 2;",
        "a truth value (ft_is_urandom_path): any non-zero is true",
    ),
    (
        r"sources/urandom\.py: return -1; -> return -2;",
        "'not a /dev/urandom read' (ft_urandom_read_bits): any negative is skipped",
    ),
    (
        r"sources/urandom\.py: if \(got_bits <= 0\) -> if \(got_bits <= 1\)",
        "got_bits is bytes read * 8: never 1",
    ),
    (
        r"sources/urandom\.py: char path\[16\] = \{\}; -> char path\[17\] = \{\};",
        "the path buffer a byte longer: only its first 13 bytes (/dev/urandom, NUL) are compared",
    ),
    (
        rf"sources/disk\.py: {_FW} -> return rwbs\[0\] == 'W' \|\| \((rwbs\[0\] != 'F' && rwbs\[1\]"
        r" == 'W'|rwbs\[1\] == 'F' && rwbs\[1\] == 'W'|rwbs\[0\] == 'F' && rwbs\[2\] == 'W')\);",
        "only an rwbs 'FW' (a preflush with data) tells these apart, and blk-mq issues none:"
        " the flush goes first as a request of its own, 'FF' (seen with dd oflag=dsync)",
    ),
    (
        r"sources/disk\.py: (unsigned int (len|flags) = 0; -> unsigned int \2 = 1;"
        r"|return flags & 1; -> return flags & 2;)",
        "a helper of the request-pointer scheme (kprobe/fentry, which this kernel lacks):"
        " not called here (and bpf_probe_read_kernel overwrites or zeroes the initial value)",
    ),
    (
        r"sources/syscalls\.py: u64 last_key = 0, (.*) -> u64 last_key = 1, \1",
        "the key of the table's one entry: its lookup and update use the same",
    ),
    (
        r"sources/syscalls\.py: u64 gap = last \? now - \*last : 0; -> .* : 1;",
        "the gap when no sync came before: only reported when quick, which needs one",
    ),
    (
        r"sources/syscalls\.py: int quick = last && gap < QUICK_NS; -> .*gap <= QUICK_NS;",
        "differs for a gap of exactly 10**9 ns only: no workload places syncs to the nanosecond",
    ),
    (
        r"sources/reads\.py: ft_read_start\.delete\(&tid\); -> \(dropped\)",
        "a finished read's start left in the table: the thread's next read(2) entry"
        " overwrites it before any exit reads it (every exit follows its entry)",
    ),
    (
        r"sources/(disk|syscalls|reads|libc)\.py: return 0; -> return 1;",
        "a probe's return value: non-zero only lets the kernel also write a sample to the"
        " probe's own perf event, which has no buffer mapped",
    ),
]

TIMEOUT = 600  # seconds for one mutant's tests (a mutant that hangs is killed)

C_PLUGIN = '''
"""Applies FLOWTRACE_C_MUTANT ([old, new]) to every program text bcc compiles."""
import dataclasses, json, os
from pathlib import Path
from flowtrace import loaded

_old, _new = json.loads(os.environ["FLOWTRACE_C_MUTANT"])
_load = loaded.LoadedProgram.load


def _mutated_load(self, program, cflags):
    if _old in program.text:
        Path(os.environ["FLOWTRACE_C_MUTANT_SEEN"]).touch()
        program = dataclasses.replace(program, text=program.text.replace(_old, _new, 1))
    return _load(self, program, cflags)


loaded.LoadedProgram.load = _mutated_load
'''


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # killed, survived, invalid (C: does not compile), unreached
    change: str  # the changed line, before -> after
    seconds: float


def copy_repository(dest: Path) -> None:
    """The working tree's tracked files (symlinks kept) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    pack = subprocess.run(
        ["tar", "--null", "-T", "-", "-cf", "-"],
        cwd=ROOT,
        input=files,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=pack, check=True)


def run_tests(
    scratch: Path, tests: list[str], env: dict[str, str], k: str = "", runner: tuple[str, ...] = ()
) -> tuple[int, str]:
    command = [
        sys.executable,
        *runner,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    ]
    command += [*tests, *(["-k", k] if k else [])]
    try:
        done = subprocess.run(
            command, cwd=scratch, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, done.stdout + done.stderr


def test_env(scratch: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ, PYTHONPATH=f"{scratch}:{scratch / 'tests'}", FLOWTRACE_REQUIRE_KERNEL="1"
    )
    env.update(extra)
    return env


def one_line_change(before: str, after: str) -> str:
    """The lines a mutant changed: ``removed -> added``, shortened
    (``(dropped)`` when nothing took their place)."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = " / ".join(d[2:].strip() for d in diff if d.startswith("- "))
    added = " / ".join(d[2:].strip() for d in diff if d.startswith("+ "))
    return f"{removed[:90]} -> {added[:90] or '(dropped)'}"


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def python_mutants(
    scratch: Path, areas: dict[str, tuple[list[str], list[str]]]
) -> dict[str, list[tuple[str, Path]]]:
    """mutmut's mutants of each area's files: area -> [(mutant name, source file)]."""
    globs = [g for files, _ in areas.values() for g in files]
    (scratch / "setup.cfg").write_text(
        "[mutmut]\nsource_paths=\n    flowtrace/\n    sinks/\nonly_mutate=\n"
        + "".join(f"    {g}\n" for g in globs)
    )
    with inside(scratch):  # mutmut reads its configuration from the working directory
        from mutmut.__main__ import (  # type: ignore[import-not-found]
            copy_also_copy_files,
            copy_src_dir,
            create_mutants,
            setup_source_paths,
        )

        Path("mutants").mkdir(exist_ok=True)
        copy_src_dir()
        copy_also_copy_files()
        setup_source_paths()
        with contextlib.redirect_stdout(sys.stderr):  # its progress is not the report
            create_mutants(os.cpu_count() or 2)
    found: dict[str, list[tuple[str, Path]]] = {}
    for area, (files, _) in areas.items():
        sources = sorted({Path(p) for g in files for p in glob.glob(g, root_dir=scratch)})
        found[area] = []
        for source in sources:
            meta = scratch / "mutants" / f"{source}.meta"
            if meta.exists():
                names = json.loads(meta.read_text())["exit_code_by_key"]
                found[area] += [(name, source) for name in sorted(names)]
    return found


def function_node(module: Any, name: str) -> Any:
    """The definition a mutmut mutant name (``x_f__mutmut_3``, ``xǁCǁm__mutmut_3``)
    belongs to in a libcst or ast module: the class's method, the last of its
    name (an implementation after its ``@overload`` stubs)."""
    from mutmut.utils.format_utils import (  # type: ignore[import-not-found]
        orig_function_and_class_names_from_key,
    )

    function, cls = orig_function_and_class_names_from_key(name)
    body = module.body
    if cls is not None:
        classes = [n for n in body if type(n).__name__ == "ClassDef" and _name(n) == cls]
        body = classes[-1].body if classes else []
        body = getattr(body, "body", body)  # libcst's IndentedBlock, ast's list
    defs = [n for n in body if type(n).__name__ in ("FunctionDef", "AsyncFunctionDef")]
    defs = [n for n in defs if _name(n) == function]
    if not defs:
        raise LookupError(f"no definition of mutant {name}")
    return defs[-1]


def _name(node: Any) -> str:
    return node.name if isinstance(node.name, str) else str(node.name.value)


def apply_mutant(name: str, source: Path) -> None:
    """Writes mutant ``name`` into ``source`` (relative; run inside the scratch
    copy). mutmut's own apply_mutant finds the function by its bare name, so a
    mutant of ``Linear.add`` replaced the first ``add`` in the file (``Log2.add``)."""
    import libcst as cst  # type: ignore[import-not-found]
    from mutmut.mutation import diff_apply  # type: ignore[import-not-found]

    pair = diff_apply.read_functions_from_index(name, source)
    if pair is not None:
        mutant = pair[1]
    else:
        mutant = diff_apply.read_mutant_function(diff_apply.read_mutants_module(source), name)
    module = cst.parse_module(source.read_text())
    source.write_text(module.deep_replace(function_node(module, name), mutant).code)


@dataclasses.dataclass
class ReachMap:
    """Which of an area's test files reach which lines of its sources, and how
    long each file takes; measured once on the unmutated copy."""

    seconds: dict[str, float]  # test file -> wall time
    lines: dict[str, dict[str, set[int]]]  # test file -> real source path -> lines run

    def tests_for(self, scratch: Path, name: str, source: Path) -> list[str]:
        """The test files that run any line of the mutated function's body,
        fastest first; all of them if the function cannot be located."""
        import ast

        path = os.path.realpath(scratch / source)
        try:
            node = function_node(ast.parse((scratch / source).read_text()), name)
        except LookupError:
            return self.all()
        body = set(range(node.body[0].lineno, node.end_lineno + 1))
        reached = [t for t in self.seconds if self.lines[t].get(path, set()) & body]
        return reached or self.all()

    def all(self) -> list[str]:
        return sorted(self.seconds, key=self.seconds.__getitem__)


def measure_tests(
    scratch: Path, files: list[str], tests: list[str], env: dict[str, str]
) -> tuple[ReachMap | None, str]:
    """Runs each test file alone under coverage: its time and the lines of
    ``files`` it runs. (None, output) if a file fails."""
    from coverage import CoverageData  # type: ignore[import-not-found]

    include = ",".join(str(scratch / g) for g in files)
    seconds: dict[str, float] = {}
    lines: dict[str, dict[str, set[int]]] = {}
    for test in tests:
        data = scratch / f".coverage-{Path(test).stem}"
        runner = ("-m", "coverage", "run", f"--data-file={data}", f"--include={include}")
        started = time.monotonic()
        code, out = run_tests(scratch, [test], env, runner=runner)
        if code != 0:
            return None, out
        seconds[test] = time.monotonic() - started
        measured = CoverageData(basename=str(data))
        measured.read()
        lines[test] = {
            os.path.realpath(f): set(measured.lines(f) or ()) for f in measured.measured_files()
        }
    return ReachMap(seconds, lines), ""


def run_python_mutant(
    scratch: Path, name: str, source: Path, tests: list[str], test_map: ReachMap | None
) -> Outcome:
    path = scratch / source
    original = path.read_text()
    started = time.monotonic()
    chosen = test_map.tests_for(scratch, name, source) if test_map else tests
    try:
        with inside(scratch):
            apply_mutant(name, source)
        mutated = path.read_text()
        code, _ = run_tests(scratch, chosen, test_env(scratch))
        rest = [t for t in test_map.all() if t not in chosen] if test_map else []
        if code == 0 and rest:  # the selection missed nothing: the others agree
            code, _ = run_tests(scratch, rest, test_env(scratch))
    finally:
        path.write_text(original)
    status = "survived" if code == 0 else "killed"
    print(f"{status:8} {name}", file=sys.stderr, flush=True)  # progress
    return Outcome(name, status, one_line_change(original, mutated), time.monotonic() - started)


# (pattern, replacement) pairs tried on each lesson line; see the module docstring
C_OPERATORS: list[tuple[str, str]] = [
    (r"([\w>.\-\[\]]+) - ([\w>.\-\[\]]+)", r"\2 - \1"),
    (r"(?<![<>=!])<(?![<=])", "<="),
    (r"<=", "<"),
    (r"(?<![-<>=!])>(?![>=])", ">="),
    (r">=", ">"),
    (r"==", "!="),
    (r"!=", "=="),
    (r"(?<![\w.])(\d+)(?![\w.])", "+1"),
]


def c_mutants(scratch: Path) -> list[tuple[str, str, str, str]]:
    """(source, k expression, old line, new line) for each C mutant of the
    lessons' bodies: lines of the generated program that the source file
    itself holds (the lesson's own C, not the framework's)."""
    code = (
        "import json, sys\n"
        "from flowtrace.sources import disk, syscalls, urandom, reads, libc, processes\n"
        "texts = {}\n"
        "for name, module in [('disk', disk), ('syscalls', syscalls), ('urandom', urandom),"
        " ('reads', reads), ('libc', libc), ('processes', processes)]:\n"
        "    for attr in dir(module):\n"
        "        make = getattr(module, attr)\n"
        "        if callable(make) and getattr(make, '__module__', '') == module.__name__:\n"
        "            try:\n"
        "                source = make()\n"
        "                texts.setdefault(name, []).append(source.generated_code())\n"
        "            except Exception:\n"
        "                pass\n"
        "json.dump(texts, sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=scratch,
        env=test_env(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    texts: dict[str, list[str]] = json.loads(done.stdout)
    mutants = []
    for source, k in C_LESSONS.items():
        own = (scratch / source).read_text()
        program = "\n".join(texts.get(Path(source).stem, []))
        seen: set[str] = set()
        for line in program.splitlines():
            body = line.strip()
            if (
                not body
                or body in seen
                or body not in own
                or body.startswith(("//", "#", "/*", "*"))
            ):
                continue
            seen.add(body)
            code = line.split("//", 1)[0]  # a comment is not code: not mutated
            for pattern, replacement in C_OPERATORS:
                for match in re.finditer(pattern, code):
                    if replacement == "+1":
                        new = f"{int(match.group(1)) + 1}"
                    else:
                        new = match.expand(replacement)
                    mutated = line[: match.start()] + new + line[match.end() :]
                    if mutated != line:
                        mutants.append((source, k, line, mutated))
            if (
                body.endswith(";")
                and "=" in body.split("(")[0]
                and not re.match(r"^(u|s)\d+ |^struct |^char |^int |^const ", body)
            ):
                mutants.append((source, k, line, ""))  # the assignment dropped
            elif body.endswith(";") and re.match(r"^[\w.>\-]+\.(update|delete|increment)\(", body):
                mutants.append((source, k, line, ""))  # the map update dropped
    return mutants


def run_c_mutant(scratch: Path, source: str, k: str, old: str, new: str) -> Outcome:
    seen = scratch / "c-mutant-seen"
    seen.unlink(missing_ok=True)
    env = test_env(
        scratch, FLOWTRACE_C_MUTANT=json.dumps([old, new]), FLOWTRACE_C_MUTANT_SEEN=str(seen)
    )
    started = time.monotonic()
    code, out = run_tests(scratch, ["-p", "_mutation_c", "tests/test_kernel_lessons.py"], env, k)
    if not seen.exists():
        status = "unreached"
    elif "could not load the program" in out or ("error:" in out and "bcc" in out):
        status = "invalid"
    else:
        status = "survived" if code == 0 else "killed"
    name = f"{source}: {old.strip()[:70]}"
    return Outcome(name, status, one_line_change(old, new), time.monotonic() - started)


def why_equivalent(outcome: Outcome) -> str | None:
    """Why a survivor cannot change behaviour (EQUIVALENT by mutant name, or
    C_EQUIVALENT by the change made), or None."""
    if outcome.name in EQUIVALENT:
        change, reason = EQUIVALENT[outcome.name]
        return reason if change == outcome.change else None
    source = outcome.name.split(": ", 1)[0]  # a C mutant's name starts with its source
    for pattern, reason in C_EQUIVALENT:
        if re.fullmatch(pattern, f"{source}: {outcome.change}"):
            return reason
    return None


def report(area: str, outcomes: list[Outcome], total: int) -> None:
    counted = [o for o in outcomes if o.status in ("killed", "survived")]
    survivors = [o for o in counted if o.status == "survived"]
    equivalent = [o for o in survivors if why_equivalent(o)]
    scored = len(counted) - len(equivalent)
    killed = sum(o.status == "killed" for o in counted)
    score = f"{100 * killed / scored:.0f}%" if scored else "n/a"
    sampled = f"sample of {len(outcomes)} of {total}" if len(outcomes) < total else f"all {total}"
    other = {s: sum(o.status == s for o in outcomes) for s in ("invalid", "unreached")}
    notes = [sampled, f"{len(equivalent)} equivalent"]
    notes += [f"{n} {s}" for s, n in other.items() if n]
    print(f"{area:14} {killed:4} killed / {scored:4} scored = {score:>4}  ({'; '.join(notes)})")
    for o in survivors:
        why = why_equivalent(o) or "hole: no test fails"
        print(f"    survived {o.name}\n        {o.change}\n        {why}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=0, help="mutants per area (0: all)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--areas", default=",".join([*PYTHON_AREAS, "c_bodies"]))
    parser.add_argument("--json", type=Path, help="also write every outcome here")
    parser.add_argument("--only", default="", help="Python mutant names to run (comma-separated)")
    args = parser.parse_args()
    areas = args.areas.split(",")
    unknown = [a for a in areas if a not in PYTHON_AREAS and a != "c_bodies"]
    if unknown:
        parser.error(
            f"unknown area {unknown[0]!r}; areas: {', '.join([*PYTHON_AREAS, 'c_bodies'])}"
        )
    rng = random.Random(args.seed)
    results: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="flowtrace-mutation-") as folder:
        scratch = Path(folder)
        copy_repository(scratch)
        (scratch / "tests" / "_mutation_c.py").write_text(C_PLUGIN)
        chosen = {a: PYTHON_AREAS[a] for a in areas if a in PYTHON_AREAS}
        mutants = python_mutants(scratch, chosen) if chosen else {}
        for area, (files, tests) in chosen.items():
            test_map = None
            if area in COVERAGE_MAPPED:
                test_map, out = measure_tests(scratch, files, tests, test_env(scratch))
                code = 0 if test_map else 1
            else:
                code, out = run_tests(scratch, tests, test_env(scratch))
            if code != 0:
                print(f"{area}: its tests fail without any mutant; fix them first:\n{out[-2000:]}")
                return 1
            names = mutants[area]
            if args.only:
                names = [(n, src) for n, src in names if n in args.only.split(",")]
            picked = rng.sample(names, min(args.sample, len(names))) if args.sample else names
            outcomes = [
                run_python_mutant(
                    scratch, name, source, TESTS_BY_FILE.get(str(source), tests), test_map
                )
                for name, source in picked
            ]
            report(area, outcomes, len(names))
            results[area] = [dataclasses.asdict(o) for o in outcomes]
        if "c_bodies" in areas:
            found = c_mutants(scratch)
            picked = rng.sample(found, min(args.sample, len(found))) if args.sample else found
            outcomes = [run_c_mutant(scratch, *m) for m in picked]
            report("c_bodies", outcomes, len(found))
            results["c_bodies"] = [dataclasses.asdict(o) for o in outcomes]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
