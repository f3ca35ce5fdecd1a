"""Histograms against bcc itself, in the kernel: the same write sizes go into
BPF_HISTOGRAMs filled with bpf_log2l() by a real program and through
flowtrace's operators; the buckets and the printed text must be identical."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import msgspec
import pytest
from kernelrun import bpf_program

from flowtrace.operators import linear_histogram, log2_histogram
from flowtrace.records import Histogram
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.testing import OperatorHarness

pytestmark = pytest.mark.kernel

PROGRAM = """
struct fd_slot_t { u64 fd; u64 slot; };
BPF_HISTOGRAM(dist);
BPF_HISTOGRAM(by_fd, struct fd_slot_t);
BPF_HISTOGRAM(lin, int, 1025);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if ((bpf_get_current_pid_tgid() >> 32) != PID)
        return 0;
    if (args->fd != FD1 && args->fd != FD2)
        return 0;
    u64 n = args->count;
    dist.increment(bpf_log2l(n));
    struct fd_slot_t key = {.fd = args->fd, .slot = bpf_log2l(n)};
    by_fd.increment(key);
    if (n <= 1024)
        lin.increment((int)n);
    return 0;
}
"""

SIZES = [0, 1, 1, 2, 3, 5, 8, 100, 512, 1000, 1024, 1024, 4096, 65536, 131072, 1 << 20]


class Write(msgspec.Struct, frozen=True):
    fd: int
    count: int


def printed(fn: Any, *args: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args)
    return out.getvalue()


def rendered(record: Histogram, style: HistogramStyle) -> str:
    return "".join(line + "\n" for line in ConsoleSink[Any](histogram=style).lines(record))


def test_histograms_match_bcc_tables_filled_in_the_kernel() -> None:
    fd1 = os.open("/dev/null", os.O_WRONLY)
    fd2 = os.open("/dev/null", os.O_WRONLY)
    try:
        assert fd1 < fd2
        text = PROGRAM.replace("PID", str(os.getpid()))
        text = text.replace("FD1", str(fd1)).replace("FD2", str(fd2))
        writes = [Write(fd1, n) for n in SIZES] + [Write(fd2, n) for n in SIZES[::3]]
        with bpf_program(text) as bpf:
            for w in writes:
                assert os.write(w.fd, b"\0" * w.count) == w.count
            kernel_log2 = printed(bpf[b"dist"].print_log2_hist, "bytes")
            kernel_by_fd = printed(
                bpf[b"by_fd"].print_log2_hist, "bytes", "fd", None, None, None, sorted
            )
            kernel_linear = printed(bpf[b"lin"].print_linear_hist, "bytes")
            kernel_slots = {k.value: v.value for k, v in bpf[b"dist"].items() if v.value}
    finally:
        os.close(fd1)
        os.close(fd2)

    def through(op: Any) -> list[Any]:
        h = OperatorHarness(op)
        h.feed(writes)
        return h.finish()

    [ours] = through(log2_histogram("count", unit="bytes"))
    assert isinstance(ours, Histogram)
    assert {b.high.bit_length(): b.count for b in ours.buckets if b.count} == kernel_slots
    assert rendered(ours, HistogramStyle(blank_line=False)) == kernel_log2

    per_fd = through(log2_histogram("count", unit="bytes", by="fd"))
    text = "".join(rendered(r, HistogramStyle(section_header="fd")) for r in per_fd)
    assert text == kernel_by_fd

    [linear] = through(linear_histogram("count", unit="bytes"))
    assert isinstance(linear, Histogram)
    assert rendered(linear, HistogramStyle(blank_line=False)) == kernel_linear
