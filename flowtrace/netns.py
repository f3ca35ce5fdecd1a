"""Running a few steps inside another network namespace.

Attaching a program to a network interface (XDP, a socket filter's raw
socket) names the interface in the calling thread's network namespace.
:func:`network_namespace` moves only the calling thread there (``setns``)
and back afterwards, so an interface inside a namespace made with
``ip netns add NAME`` is reachable without running the whole process in
it. What was created inside (a socket, an XDP link) stays bound to that
namespace after the thread returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import AttachError

__all__ = ["NETNS_DIR", "netns_path", "network_namespace"]

NETNS_DIR = "/run/netns"
"""Where ``ip netns add NAME`` keeps its namespaces."""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def netns_path(name: str) -> str:
    """The file of namespace ``name``: a path as given, else ``/run/netns/NAME``."""
    return name if "/" in name else f"{NETNS_DIR}/{name}"


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise AttachError(
            f"cannot enter network namespace {what}: {os.strerror(err)} (run as root)"
        )


@contextmanager
def network_namespace(name: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``name``
    (``""``: stay where it is). The thread returns to its own namespace on
    every exit path; failing to return is fatal for the process's
    correctness, so it raises rather than carry on in the wrong place."""
    if not name:
        yield
        return
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise AttachError(
            f"no network namespace {name!r} ({path}: {exc.strerror}): see ip netns list"
        ) from None
    try:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target, repr(name))
        try:
            yield
        finally:
            _setns(own, "of this thread")
    finally:
        os.close(own)
        os.close(target)
