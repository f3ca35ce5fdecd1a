"""Attach points on a network interface instead of a probe: XDP and socket filters.

* :class:`Xdp` runs the program on every packet arriving at ``interface``
  before the kernel's network stack sees it; the body returns an XDP action
  (``XDP_PASS``, ``XDP_DROP``). It is attached through a BPF link, which the
  kernel removes when the link's file descriptor closes, so a run that ends
  any way at all (a crash included) leaves nothing attached to the interface.
* :class:`SocketFilter` runs the program on every packet a raw packet socket
  bound to ``interface`` sees (both directions); the body returns ``-1`` to
  pass the whole packet to that socket, ``0`` to leave it out (the packet
  itself goes on its way either way). The socket is the program's output:
  :class:`flowtrace.packet_outputs.PacketSocket` reads it.

Both name an interface of the network namespace ``netns`` (a name from
``ip netns``, or ``""``: this process's), entered only by the thread that
attaches (:mod:`flowtrace.netns`). The probe body gets the packet context as
``ctx`` (``struct xdp_md *`` or ``struct __sk_buff *``); socket filters read
packet bytes with ``load_byte``/``load_half``/``load_word(ctx, offset)``
(big-endian, as on the wire).
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import AttachError, one_line
from .netns import network_namespace
from .probes import AttachPoint, Param

__all__ = ["SocketFilter", "Xdp"]

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_BPF_LINK_CREATE = 28
_BPF_XDP = 37  # enum bpf_attach_type
_XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}  # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE


class _LinkCreate(ctypes.Structure):
    """The ``link_create`` member of ``union bpf_attr``, padded to its size."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_ifindex", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 64),
    ]


def _xdp_link(prog_fd: int, ifindex: int, flags: int) -> int:
    """A BPF link attaching XDP program ``prog_fd`` to ``ifindex`` (in the
    calling thread's network namespace); its file descriptor."""
    if _SYS_BPF is None:
        raise OSError(0, f"bpf() syscall number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _LinkCreate(prog_fd, ifindex, _BPF_XDP, flags)
    fd = int(libc.syscall(_SYS_BPF, _BPF_LINK_CREATE, ctypes.byref(attr), ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _where(interface: str, netns: str) -> str:
    return f"{interface} (network namespace {netns})" if netns else interface


def _interface_missing(interface: str, netns: str) -> str | None:
    try:
        with network_namespace(netns):
            socket.if_nametoindex(interface)
    except AttachError as exc:
        return str(exc)
    except OSError:
        where = f"network namespace {netns}" if netns else "this network namespace"
        return f"no interface {interface} in {where} (see ip link)"
    return None


def _function(bpf: Any, fn: str) -> Any:
    """bcc's handle of the loaded function ``fn``, or None if not loaded."""
    return bpf.funcs.get(fn.encode())


@dataclass(frozen=True)
class Xdp(AttachPoint):
    """An XDP program on ``interface``: ``mode`` is ``"generic"`` (the
    kernel runs it on the socket buffer: any interface, veth included) or
    ``"native"`` (in the driver, where the driver supports it)."""

    interface: str
    netns: str = ""
    mode: str = "generic"
    feature: ClassVar[str] = "bpf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in _XDP_FLAGS:
            raise ValueError(f"XDP mode must be generic or native, not {self.mode!r}")

    def describe(self) -> str:
        return f"XDP ({self.mode}) on {_where(self.interface, self.netns)}"

    def missing(self) -> str | None:
        return _interface_missing(self.interface, self.netns)

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["ctx", *self.fetch(params, [f"({p.c_type})0" for p in params])]
        return (
            f"int {fn}(struct xdp_md *ctx) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )

    def attach(self, bpf: Any, fn: str) -> None:
        from bcc import BPF

        function = bpf.load_func(fn.encode(), BPF.XDP)
        with network_namespace(self.netns):
            try:
                ifindex = socket.if_nametoindex(self.interface)
                function.ft_link = _xdp_link(function.fd, ifindex, _XDP_FLAGS[self.mode])
            except OSError as exc:
                raise AttachError(f"{self.describe()}: {one_line(exc)}") from exc

    def detach(self, bpf: Any, fn: str) -> None:
        function = _function(bpf, fn)
        link = getattr(function, "ft_link", None)
        if link is not None:
            function.ft_link = None
            os.close(link)  # the kernel detaches the program with its last link


@dataclass(frozen=True)
class SocketFilter(AttachPoint):
    """A socket filter on a raw packet socket bound to ``interface``; see
    the module docstring for what its return value means."""

    interface: str
    netns: str = ""
    feature: ClassVar[str] = "bpf"

    def describe(self) -> str:
        return f"socket filter on a raw socket on {_where(self.interface, self.netns)}"

    def missing(self) -> str | None:
        return _interface_missing(self.interface, self.netns)

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        fetch = ["skb", *self.fetch(params, [f"({p.c_type})0" for p in params])]
        return (
            f"int {fn}(struct __sk_buff *skb) {{\n"
            f"    return {call.format(args=', '.join(fetch))};\n}}"
        )

    def attach(self, bpf: Any, fn: str) -> None:
        from bcc import BPF

        function = bpf.load_func(fn.encode(), BPF.SOCKET_FILTER)
        with network_namespace(self.netns):
            BPF.attach_raw_socket(function, self.interface.encode())

    def detach(self, bpf: Any, fn: str) -> None:
        function = _function(bpf, fn)
        sock = getattr(function, "sock", None)
        if sock is not None:
            function.sock = None
            os.close(sock)  # a reader keeps its own duplicate until it closes


def raw_socket(bpf: Any, fns: Sequence[str]) -> int:
    """The raw socket a :class:`SocketFilter` among ``fns`` opened; raises
    AttachError when none did."""
    for fn in fns:
        sock = getattr(_function(bpf, fn), "sock", None)
        if sock is not None:
            return int(sock)
    raise AttachError("no socket filter of this program opened a raw socket")
