"""``flowtrace plot``: not built yet."""

from __future__ import annotations

import argparse

from .errors import PipelineFileError

__all__ = ["plot_command"]


def plot_command(args: argparse.Namespace) -> int:
    """Not built yet: refuses with one line."""
    raise PipelineFileError("flowtrace plot is not built yet")
