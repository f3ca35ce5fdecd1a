"""Functions in user-space binaries and libraries, as uprobes must see them.

A uprobe on a symbol attaches where the ELF symbol points. For an IFUNC
(glibc's ``strlen``, ``memcpy``...) that is the resolver, which runs once at
load time; the calls go to the implementation it picked, so
:func:`user_function` resolves that implementation.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["UserFunction", "user_function"]

_STT_FUNC = 2
_STT_GNU_IFUNC = 10


@dataclass(frozen=True)
class UserFunction:
    """Where a uprobe on ``symbol`` in a binary or library really goes.

    ``address`` is the ELF virtual address to probe instead of the symbol
    (None: probe the symbol itself); ``detail`` says why, e.g. that the
    symbol is an IFUNC whose resolver picked another implementation.
    """

    path: str
    symbol: str
    address: int | None = None
    detail: str = ""


def _symbol_offset(path: str, symbol: str, types: int) -> int | None:
    """bcc's offset of ``symbol`` in ``path`` among symbols of ``types`` (a bit
    mask of ELF symbol types), or None when there is no such symbol."""
    from bcc.libbcc import bcc_symbol, bcc_symbol_option, lib

    sym = bcc_symbol()
    option = bcc_symbol_option()
    option.use_debug_file = 0
    option.check_debug_file_crc = 0
    option.lazy_symbolize = 1
    option.use_symbol_type = types
    result = lib.bcc_resolve_symname(
        path.encode(), symbol.encode(), 0, 0, ctypes.byref(option), ctypes.byref(sym)
    )
    if result < 0:
        return None
    lib.bcc_procutils_free(sym.module)
    return int(sym.offset)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _ifunc_target(path: str, symbol: str) -> int:
    """The ELF virtual address of the implementation the IFUNC ``symbol``'s
    resolver picks on this machine, read from this process's own binding.

    The library must already be loaded here (libc always is): loading it
    just to ask would run its constructors.
    """
    try:
        library: Any = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        raise LookupError(
            f"{symbol} in {path} is an IFUNC and {path} is not loaded in flowtrace, "
            "so the implementation its resolver picks is unknown; "
            "probe the implementation's address instead"
        ) from None
    address = ctypes.cast(getattr(library, symbol), ctypes.c_void_p).value
    info = _DlInfo()
    libc: Any = ctypes.CDLL(None)
    if not address or not libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        raise LookupError(f"cannot locate the implementation of IFUNC {symbol} in {path}")
    return int(address) - int(info.dli_fbase or 0)


@functools.lru_cache(maxsize=64)
def user_function(binary: str, symbol: str, follow_ifunc: bool = True) -> UserFunction:
    """Resolve ``symbol`` in ``binary`` (a path, or a library name like ``"c"``).

    With ``follow_ifunc``, an IFUNC symbol (glibc's ``strlen``, ``memcpy``...)
    resolves to the implementation its resolver picks on this CPU: a uprobe on
    the symbol itself would only see the resolver, which runs once at load
    time, and none of the calls. Raises LookupError naming what is missing.
    """
    from bcc import BPF

    if "/" in binary:
        if not Path(binary).is_file():
            raise LookupError(f"no binary {binary}")
        path = binary
    else:
        found = BPF.find_library(binary.encode())
        if not found:
            raise LookupError(f"no library {binary!r} (looked for lib{binary}.so)")
        path = found.decode() if isinstance(found, bytes) else str(found)
    if _symbol_offset(path, symbol, 1 << _STT_FUNC | 1 << _STT_GNU_IFUNC) is None:
        raise LookupError(f"no function {symbol} in {path}")
    if not follow_ifunc or _symbol_offset(path, symbol, 1 << _STT_GNU_IFUNC) is None:
        return UserFunction(path, symbol)
    address = _ifunc_target(path, symbol)
    return UserFunction(
        path,
        symbol,
        address,
        f"IFUNC: the implementation its resolver picks here, at {address:#x}",
    )
