"""A Ctrl-C while the ``flowtrace`` command is still starting ends it quietly.

Importing flowtrace takes about a quarter of a second, all of it before
:func:`flowtrace.cli.main` runs and can catch ``KeyboardInterrupt``. The
package imports this module first; in the ``flowtrace`` command's own
process only (``sys.argv[0]`` names it), SIGINT then ends the process at
once with status 130 and no traceback, until :func:`release` (the first
thing ``main`` does) hands SIGINT back to Python. Nothing has started by
then, so there is nothing to stop or report. A program that imports
flowtrace keeps its own signal handling.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

__all__ = ["INTERRUPTED", "release"]

INTERRUPTED = 128 + signal.SIGINT
"""The exit status of a command ended by Ctrl-C (130), as shells report it."""


def _end_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(INTERRUPTED)


def release() -> None:
    """SIGINT raises ``KeyboardInterrupt`` again (if this module took it)."""
    if signal.getsignal(signal.SIGINT) is _end_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _is_the_command() -> bool:
    argv = getattr(sys, "argv", None) or [""]
    return (
        os.path.basename(argv[0]) == "flowtrace"
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


if _is_the_command():
    signal.signal(signal.SIGINT, _end_quietly)
