"""Strings from the kernel, a recording or a user's code shown as text.

A process may name itself with terminal escape sequences (``prctl
PR_SET_NAME``), and a recording or a message may carry any character:
whatever prints such a string (the console sink, the live view, error
lines) passes it through :func:`visible`, so it reaches the terminal as
text, never as control codes.
"""

from __future__ import annotations

__all__ = ["CONTROL_AS_TEXT", "visible", "visible_line"]

CONTROL_AS_TEXT = {
    c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)
}
"""C0 and C1 control characters and DEL, each as ``\\xNN`` (a ``str.translate``
table); tabs and line ends stay as they are."""


def visible(text: str) -> str:
    """``text`` with every control character but tab and line end shown as
    ``\\xNN`` (``"\\x1b[2J"`` prints as the six characters ``\\x1b[2J``)."""
    return text.translate(CONTROL_AS_TEXT)


_LINE_AS_TEXT = {**CONTROL_AS_TEXT, 0x0A: "\\x0a"}


def visible_line(text: str) -> str:
    """:func:`visible`, line ends too: one line of output stays one line (a
    string from the kernel cannot forge a line of its own)."""
    return text.translate(_LINE_AS_TEXT)
