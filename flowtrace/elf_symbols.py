"""Function symbols of ELF files, for naming the addresses in user stacks.

:func:`elf_functions` reads an ELF64 little-endian file's function symbols
(``.symtab`` where the file has one, and ``.dynsym``) and its loadable
segments, once per file version (path, device, inode, size and
modification time; at most 256 files are kept). :meth:`ElfFunctions.name`
turns an offset in the file (what ``/proc/PID/maps`` gives for an address)
into ``function`` (or ``function+0x12``), or None where no symbol covers it.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
from dataclasses import dataclass

__all__ = ["ElfFunctions", "elf_functions"]

_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_PT_LOAD = 1
_SHT_SYMTAB = 2
_SHT_DYNSYM = 11


@dataclass(frozen=True)
class ElfFunctions:
    """Function symbols by start address, and the file's loadable segments."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    names: tuple[str, ...]
    segments: tuple[tuple[int, int, int], ...]  # (file offset, virtual address, size)

    def address(self, offset: int) -> int | None:
        """The virtual address a file ``offset`` is loaded at, if any segment holds it."""
        for file_offset, vaddr, size in self.segments:
            if file_offset <= offset < file_offset + size:
                return vaddr + offset - file_offset
        return None

    def name(self, offset: int, with_offset: bool = False) -> str | None:
        """The function at file ``offset`` (``function+0xN`` ``with_offset``), or None."""
        vaddr = self.address(offset)
        if vaddr is None:
            return None
        at = bisect.bisect_right(self.starts, vaddr) - 1
        if at < 0 or vaddr >= self.ends[at]:
            return None
        delta = vaddr - self.starts[at]
        return f"{self.names[at]}+{delta:#x}" if with_offset and delta else self.names[at]


_EMPTY = ElfFunctions((), (), (), ())


def _read(data: bytes) -> ElfFunctions:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return _EMPTY  # not a 64-bit little-endian ELF file
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", data, 0x36)
    segments = []
    for i in range(phnum):
        at = phoff + i * phentsize
        kind, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data, at)
        if kind == _PT_LOAD:
            segments.append((offset, vaddr, filesz))
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    found: dict[int, tuple[int, str]] = {}
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind not in (_SHT_SYMTAB, _SHT_DYNSYM) or not entsize:
            continue
        strings = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, info, _, shndx, value, symsize = struct.unpack_from("<IBBHQQ", data, at)
            if info & 0xF not in (_STT_FUNC, _STT_GNU_IFUNC) or not shndx or not value:
                continue
            end = data.index(b"\0", strings + name_at)
            name = data[strings + name_at : end].decode("utf-8", "replace")
            if value not in found or found[value][0] < symsize:
                found[value] = (max(symsize, 1), name)
    ordered = sorted(found.items())
    return ElfFunctions(
        tuple(v for v, _ in ordered),
        tuple(v + size for v, (size, _) in ordered),
        tuple(name for _, (_, name) in ordered),
        tuple(segments),
    )


@functools.lru_cache(maxsize=256)
def _cached(path: str, identity: tuple[int, int, int, int]) -> ElfFunctions:
    try:
        with open(path, "rb") as f:
            return _read(f.read())
    except (OSError, struct.error, IndexError, ValueError):
        return _EMPTY


def elf_functions(path: str) -> ElfFunctions:
    """The function symbols of the ELF file at ``path`` (none for a file
    that cannot be read or is not ELF64 little-endian)."""
    try:
        st = os.stat(path)
    except OSError:
        return _EMPTY
    return _cached(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
