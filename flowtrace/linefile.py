"""Writing whole lines to a file descriptor: everything, or the file cut back
to its last whole line. Shared by the NDJSON sink and the recorder."""

from __future__ import annotations

import os

__all__ = ["write_lines"]


def write_lines(fd: int, data: bytes | memoryview, size: int, *, cut: bool = True) -> int:
    """Write all of ``data`` (whole newline-terminated lines) to ``fd`` at its
    current offset and return the file's new size, ``size + len(data)``.

    ``size`` is the file's size before the call, which ends on a whole line.
    ``os.write`` is retried until every byte is written. If it raises part way
    (disk full, file too large, a signal's exception), and ``cut`` is true
    (``fd`` is a regular file), the file is truncated back to ``size`` and the
    offset moved there, so it still ends on a whole line and a later write
    continues it without a gap; then the error is re-raised. With ``cut``
    false (a pipe, a terminal) what was written stays written.
    """
    view = memoryview(data)
    written = 0
    try:
        while written < len(view):
            written += os.write(fd, view[written:])
    except BaseException:
        if cut and written:
            os.ftruncate(fd, size)  # back to the last whole line
            os.lseek(fd, size, os.SEEK_SET)
        raise
    return size + written
