"""The pipelines shipped with flowtrace (``pipelines/``, installed as
``flowtrace.pipelines``): found by name from any directory, listed with
their one-line descriptions. Files are read, never imported, to list them."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from . import pipelines

__all__ = ["Lesson", "find", "lessons"]

FOLDER = Path(pipelines.__file__).resolve().parent


@dataclass(frozen=True)
class Lesson:
    """A shipped pipeline: its name (the file name without ``.py``), its
    file, and the first line of its docstring."""

    name: str
    path: Path
    summary: str


def _summary(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_bytes(), str(path))) or ""
    except (OSError, SyntaxError, ValueError):
        return "(its docstring cannot be read)"
    return doc.strip().splitlines()[0] if doc.strip() else ""


def lessons() -> list[Lesson]:
    """Every shipped pipeline, by name."""
    files = sorted(p for p in FOLDER.glob("*.py") if not p.name.startswith("_"))
    return [Lesson(p.stem, p, _summary(p)) for p in files]


def find(name: str) -> Path | None:
    """The file of the shipped pipeline ``name`` (``disklatency`` or
    ``disklatency.py``), or None."""
    stem = name[:-3] if name.endswith(".py") else name
    if not stem.isidentifier():
        return None
    path = FOLDER / f"{stem}.py"
    return path if path.is_file() else None
