"""Calls of C library functions, by uprobe.

glibc's ``strlen`` is an IFUNC: the symbol is a resolver that picks an
implementation for this CPU (``__strlen_avx2``, ``__strlen_evex``...) once per
process, and calls go straight to that implementation. The uprobe follows
the IFUNC to the implementation (see :class:`flowtrace.probes.Uprobe`), so
every call is seen, including calls made inside libc.
"""

from __future__ import annotations

import os
from typing import Annotated

from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import Char, task_comm, task_pid
from flowtrace.probes import Param, Probe, Uprobe

__all__ = ["STRING_BYTES", "StrlenCall", "strlen_calls"]

STRING_BYTES = 80
"""How much of each string is kept (the tutorial's 80 bytes, NUL included)."""


class StrlenCall(Event, frozen=True):
    """Process ``pid`` called strlen() on ``string`` (cut to 79 bytes)."""

    pid: task_pid
    comm: task_comm
    string: Annotated[str, Char(STRING_BYTES)]


def strlen_calls(*, follow_ifunc: bool = True, transport: str = "auto") -> KernelSource[StrlenCall]:
    """Every strlen() call in every process using the system's libc, except
    this one (counting its own calls would feed back into what it counts).

    ``follow_ifunc=False`` probes the ``strlen`` symbol itself, as the
    tutorial did: with an IFUNC strlen that sees no calls at all.
    """
    probe = Probe(
        "calls of libc strlen()",
        Uprobe("c", "strlen", fields={"s": "PT_REGS_PARM1(ctx)"}, follow_ifunc=follow_ifunc),
        body=f"""\
if (!s || e.pid == {os.getpid()})
    return 0;
bpf_probe_read_user_str(&e.string, sizeof(e.string), (void *)s);""",
        params=[Param("s")],
    )
    return KernelSource(StrlenCall, probe, name="strlen", transport=transport, buffer_pages=1024)
