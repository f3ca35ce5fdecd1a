"""Command-line options of pipeline files, with one-line errors.

A pipeline file whose ``pipeline`` is a function gets the arguments after
its path; :class:`Arguments` is ``argparse`` for them that never prints or
exits: a bad argument raises :class:`~flowtrace.errors.PipelineFileError`
with one line naming the problem and the usage (the CLI exits 2 with it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from .errors import PipelineFileError

__all__ = ["Arguments", "positive_int"]


class Arguments(argparse.ArgumentParser):
    """``argparse`` for pipeline ``path`` (shown in errors with ``usage``)."""

    def __init__(self, path: str, usage: str) -> None:
        super().__init__(prog=path, add_help=False, allow_abbrev=False)
        self.path = path
        self.usage_line = usage

    def error(self, message: str) -> NoReturn:
        raise PipelineFileError(
            f"{self.path}: {message}: run flowtrace run {self.path} {self.usage_line}"
        )

    def parse(self, args: Sequence[str]) -> argparse.Namespace:
        return self.parse_args(list(args))


def positive_int(text: str) -> int:
    """An argument that must be a positive integer in ASCII digits."""
    if not (text.isascii() and text.isdecimal() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)
