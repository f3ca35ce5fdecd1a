"""Output files: opened safely, written in whole lines (everything, or the
file cut back to its last whole line). Shared by the NDJSON sink and the
recorder."""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Callable

import anyio

__all__ = ["is_pipe", "open_output", "write_lines", "write_to_pipe"]


def open_output(path: str | os.PathLike[str], mode: int, *, nonblocking: bool = False) -> int:
    """Open ``path`` for writing, truncated, as an output file should be.

    A symlink at the last component is refused (a link planted in a shared
    directory must not redirect root's writes); a new file is created with
    ``mode``; an existing regular file owned by another user is refused,
    untouched. Raises ``OSError`` (a ``PermissionError`` naming the owner for
    a stranger's file). ``nonblocking``: a FIFO without a reader raises
    ``ENXIO`` instead of waiting.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags | (os.O_NONBLOCK if nonblocking else 0), mode)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            if info.st_uid != os.geteuid():
                raise PermissionError(
                    f"{os.fspath(path)} belongs to another user (uid {info.st_uid}); flowtrace"
                    " does not write into other users' files: choose another path"
                )
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


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


def is_pipe(fd: int) -> bool:
    """Whether ``fd`` is a pipe, FIFO, socket or terminal: something whose
    reader may stop reading, so a plain write could block."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def write_to_pipe(
    fd: int, data: bytes | memoryview, written: Callable[[int], None] = lambda n: None
) -> None:
    """Write ``data`` to a pipe, FIFO or terminal without ever blocking the
    event loop, also on a blocking ``fd``: wait until it takes more, then
    write at most what it surely takes (``PIPE_BUF`` bytes), telling
    ``written`` each time. The first piece goes without a wait when ``fd``
    takes it already (a poll that does not wait: a line or two reach the
    reader without a pass through the event loop). A reader that stops
    reading holds this call, not the event loop: cancelling it (a stop's
    deadline) ends the wait."""
    view = memoryview(data)
    done = 0
    wait = not _takes_more(fd)
    while done < len(view):
        if wait:
            await anyio.wait_writable(fd)
        wait = True
        try:
            n = os.write(fd, view[done : done + select.PIPE_BUF])
        except BlockingIOError:
            continue
        done += n
        written(n)


def _takes_more(fd: int) -> bool:
    """Whether ``fd`` takes a write now, as ``anyio.wait_writable`` would say."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))
