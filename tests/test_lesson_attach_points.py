"""Attach points against this machine's binaries and kernel: why each is
refused says what is missing and what to do."""

from __future__ import annotations

import pytest

from flowtrace import kernel, userspace
from flowtrace.probes import Fentry, Kprobe, Uprobe, Usdt

pytestmark = pytest.mark.kernel


def test_a_usdt_probe_behind_a_semaphore_needs_a_pid() -> None:
    point = Usdt("gc__start", binary="/usr/bin/python3.11", provider="python")
    reason = point.missing()
    assert reason is not None
    assert "enabled by a semaphore" in reason and "give the pid to trace" in reason
    assert Usdt("no__such", binary="/usr/bin/python3.11").missing() == (
        "/usr/bin/python3.11 has no USDT probe no__such"
    )


def test_uprobe_targets_that_do_not_exist_are_named() -> None:
    assert Uprobe("c", "no_such_function_here").missing() == (
        f"no function no_such_function_here in {userspace.user_function('c', 'strlen').path}"
    )
    assert Uprobe("nosuchlibrary", "f").missing() == (
        "no library 'nosuchlibrary' (looked for libnosuchlibrary.so)"
    )
    assert Uprobe("/no/such/binary", "f").missing() == "no binary /no/such/binary"


def test_a_plain_libc_function_is_probed_by_symbol_and_an_ifunc_by_address() -> None:
    plain = userspace.user_function("c", "getpid")
    assert (plain.address, plain.detail) == (None, "")
    followed = userspace.user_function("c", "strlen")
    assert followed.address is not None and "IFUNC" in followed.detail
    assert userspace.user_function("c", "strlen", follow_ifunc=False).address is None


def test_struct_reads_are_refused_unless_the_headers_are_the_running_kernels() -> None:
    reads = Kprobe(function="blk_mq_start_request", reads_kernel_structs=True)
    plain = Kprobe(function="blk_mq_start_request")
    assert plain.missing() is None  # the function exists here
    exact = kernel.kernel_headers().match == "exact"
    reason = reads.missing()
    assert (reason is None) == exact
    if not exact:
        assert reason is not None and "field offsets would be wrong" in reason


def test_fentry_cannot_use_a_compiler_renamed_function() -> None:
    target = kernel.find_kernel_function("finish_task_switch")
    point = Fentry(function="finish_task_switch", signature=("struct task_struct *prev",))
    if target is not None and "." in target:
        assert point.missing() == f"fentry cannot attach to the compiler-renamed {target}"
    else:
        assert point.missing() is None
