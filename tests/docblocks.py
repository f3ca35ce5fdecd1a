"""The fenced code blocks of README.md and docs/*.md, with how each is tested.

A block's test is named by an HTML comment on the line right before its
opening fence:

* ``<!-- run -->``: run without a kernel (python: executed; sh: each
  command run, exit status 0);
* ``<!-- run: kernel -->``: the same, as root against the real kernel;
* ``<!-- run: kernel, after examples -->``: executed after the file's
  ``example`` blocks, in their namespace;
* ``<!-- recipe: NAME -->``: a ``flowtrace`` command that tests/test_recipes.py
  runs against a known workload, checking its output;
* ``<!-- example: NAME -->``: executed by tests/test_operators_custom.py;
* ``<!-- excerpt: PATH -->``: the block is a verbatim part of PATH (a file
  other tests run);
* ``<!-- not run: REASON -->``: not run, for the reason given.

tests/test_docs.py says how a block runs (python blocks in an empty
temporary directory, sh blocks from the repository's root). Blocks in
``python`` or ``sh`` must carry one of these. Blocks in the data
languages of :data:`DATA` (output, records, configuration) are not code and
carry none. A block without a language is an error: say ``text`` for output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = ("python", "sh")
DATA = ("text", "json", "toml", "ini")

_FENCE = re.compile(r"^```(.*)$")
_MARKER = re.compile(r"^<!-- (run|recipe|example|excerpt|not run)(?:: (.*?))? -->$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its marker and its text."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    marker: str | None  # run, recipe, example, excerpt, not run
    argument: str  # what follows the marker's colon
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def options(self) -> set[str]:
        """A ``run`` marker's comma-separated options (kernel, after examples)."""
        return {o.strip() for o in self.argument.split(",") if o.strip()}


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = _MARKER.match(lines[i - 1]) if i else None
        found.append(
            Block(
                path,
                i + 1,
                fence.group(1).strip(),
                marker.group(1) if marker else None,
                (marker.group(2) or "") if marker else "",
                "\n".join(lines[i + 1 : end]) + "\n",
            )
        )
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in blocks(path)]


def marked(marker: str) -> list[Block]:
    return [block for block in all_blocks() if block.marker == marker]


def commands(block: Block) -> list[str]:
    """The commands of an sh block: its lines that are not comments or blank."""
    return [
        line for line in block.text.splitlines() if line.strip() and not line.startswith("#")
    ]
