"""Reading BPF maps from user space in bulk, and memory barriers.

A :class:`PerCpuMap` reads a per-CPU hash or array with the ``bpf()``
batch commands into numpy arrays (one row per key, one column per
possible CPU), so reading ten thousand keys is a few system calls and no
Python call per key. :func:`barrier` and :func:`wait_for_programs` order
user-space map writes against running BPF programs (see
:mod:`flowtrace.map_output`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import time
from typing import Any

import numpy as np

__all__ = ["PerCpuMap", "barrier", "possible_cpus", "wait_for_programs"]

_MEMBARRIER = {"x86_64": 324, "aarch64": 283}.get(platform.machine())
_CMD_GLOBAL = 1
_CMD_PRIVATE_EXPEDITED = 8
_CMD_REGISTER_PRIVATE_EXPEDITED = 16


@functools.cache
def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for."""
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _membarrier(command: int) -> bool:
    if _MEMBARRIER is None:
        return False
    return int(_libc().syscall(_MEMBARRIER, command, 0, 0)) == 0


@functools.cache
def _registered() -> bool:
    return _membarrier(_CMD_REGISTER_PRIVATE_EXPEDITED)


def barrier() -> None:
    """A full memory barrier on this CPU between the map writes before it
    and the map reads after it (``membarrier(2)``, a few microseconds);
    where that is not available, a pause of a millisecond, after which a
    store has long left any store buffer."""
    if not (_registered() and _membarrier(_CMD_PRIVATE_EXPEDITED)):
        time.sleep(0.001)


def wait_for_programs() -> None:
    """Return once every BPF program that was running has finished (an RCU
    grace period, ``membarrier(MEMBARRIER_CMD_GLOBAL)``, some 20 ms); where
    that is not available, wait 50 ms."""
    if not _membarrier(_CMD_GLOBAL):
        time.sleep(0.05)


def _lib() -> Any:
    from bcc.libbcc import lib

    return lib


class PerCpuMap:
    """A per-CPU hash (``keyed``) or one-element array of ``value`` (a numpy
    dtype of one CPU's value, a multiple of 8 bytes) with keys of
    ``key_size`` bytes, at most ``max_entries`` of them."""

    def __init__(
        self, fd: int, value: np.dtype[Any], key_size: int, max_entries: int, keyed: bool
    ) -> None:
        self.fd = fd
        self.value = value
        self.key_size = key_size
        self.max_entries = max_entries
        self.keyed = keyed
        self.cpus = possible_cpus()
        self.row = np.dtype((value, (self.cpus,)))

    def take(self) -> tuple[bytes, np.ndarray[Any, Any]]:
        """Every key (raw bytes, back to back) and its values, removing them
        from the map (an array is read, then zeroed)."""
        if not self.keyed:
            return b"", self._take_array()
        lib = _lib()
        keys = np.zeros(self.max_entries * self.key_size, dtype=np.uint8)
        values = np.zeros(self.max_entries, dtype=self.row)
        token = ctypes.c_uint32(0)
        count = ctypes.c_uint32(0)
        total = 0
        while total < self.max_entries:
            count.value = self.max_entries - total
            result = lib.bpf_lookup_and_delete_batch(
                self.fd,
                ctypes.byref(token) if total else None,
                ctypes.byref(token),
                keys.ctypes.data + total * self.key_size,
                values.ctypes.data + total * self.row.itemsize,
                ctypes.byref(count),
            )
            error = ctypes.get_errno()
            total += count.value
            if result != 0:
                if error == errno.ENOENT:
                    break
                raise OSError(error, f"reading a BPF map: {os.strerror(error)}")
        return keys[: total * self.key_size].tobytes(), values[:total]

    def _take_array(self) -> np.ndarray[Any, Any]:
        lib = _lib()
        key = ctypes.c_uint32(0)
        values = np.zeros(1, dtype=self.row)
        if lib.bpf_lookup_elem(self.fd, ctypes.byref(key), values.ctypes.data) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"reading a BPF map: {os.strerror(error)}")
        zeros = np.zeros(1, dtype=self.row)
        if lib.bpf_update_elem(self.fd, ctypes.byref(key), zeros.ctypes.data, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"clearing a BPF map: {os.strerror(error)}")
        return values

    def count(self) -> int:
        """How many keys the hash holds now."""
        lib = _lib()
        key = (ctypes.c_uint8 * self.key_size)()
        following = (ctypes.c_uint8 * self.key_size)()
        n = 0
        if lib.bpf_get_first_key(self.fd, key, self.key_size) != 0:
            return 0
        while True:
            n += 1
            if lib.bpf_get_next_key(self.fd, key, following) != 0:
                return n
            ctypes.memmove(key, following, self.key_size)


def read_u32_array(fd: int, index: int) -> int:
    """Element ``index`` of a BPF array of u32."""
    value = ctypes.c_uint32(0)
    key = ctypes.c_uint32(index)
    if _lib().bpf_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"reading a BPF map: {os.strerror(error)}")
    return int(value.value)


def write_u32_array(fd: int, index: int, value: int) -> None:
    """Set element ``index`` of a BPF array of u32."""
    data = ctypes.c_uint32(value)
    key = ctypes.c_uint32(index)
    if _lib().bpf_update_elem(fd, ctypes.byref(key), ctypes.byref(data), 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"writing a BPF map: {os.strerror(error)}")


def per_cpu_sum(fd: int, index: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Element ``index`` of a per-CPU array of ``dtype`` summed over CPUs."""
    cpus = possible_cpus()
    values = np.zeros(cpus, dtype=dtype)
    key = ctypes.c_uint32(index)
    if _lib().bpf_lookup_elem(fd, ctypes.byref(key), values.ctypes.data) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"reading a BPF map: {os.strerror(error)}")
    total: np.ndarray[Any, Any] = values.sum(axis=0)
    return total
