"""``flowtrace run --live``: not built yet."""

from __future__ import annotations

from .errors import PipelineFileError
from .stages import Pipeline

__all__ = ["with_live_view"]


def with_live_view(pipeline: Pipeline) -> Pipeline:
    """Not built yet: refuses with one line."""
    raise PipelineFileError("--live is not built yet")
