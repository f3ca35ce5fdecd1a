"""Flame graphs as SVG, drawn from folded stacks.

A folded stack is ``frame;frame;...;frame`` (outermost first) with a count,
as flamegraph.pl reads it. :func:`flame_graph` merges the stacks into a
tree and draws each frame as a box whose width is its share of all counts,
callers below callees (root at the bottom), like flamegraph.pl: boxes too
narrow to read get no label, and each box's tooltip names the frame with
its count and share. Colours are warm and fixed per frame name, so two
graphs of one program look alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import escape

__all__ = ["flame_graph"]

_WIDTH = 1200
_FRAME = 16  # pixels per stack level
_PAD = 10
_TOP = 40  # room for the title
_CHAR = 7.0  # about the width of a 12 px character
_MIN_WIDTH = 0.1  # boxes narrower than this (pixels) are not drawn


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[str, int]) -> _Node:
    root = _Node("all")
    for stack, count in stacks.items():
        root.count += count
        node = root
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, _Node(frame))
            node.count += count
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _colour(name: str) -> str:
    digest = hashlib.md5(name.encode()).digest()
    return f"rgb({205 + digest[0] % 50},{digest[1] % 230},{digest[2] % 55})"


def _boxes(node: _Node, x: float, level: int, scale: float) -> Iterator[tuple[_Node, float, int]]:
    yield node, x, level
    for child in sorted(node.children.values(), key=lambda c: c.name):
        if child.count * scale >= _MIN_WIDTH:
            yield from _boxes(child, x, level + 1, scale)
        x += child.count * scale


def flame_graph(stacks: Mapping[str, int], title: str = "Flame Graph") -> str:
    """An SVG flame graph of ``stacks`` (folded stack -> count)."""
    root = _tree(stacks)
    levels = _depth(root)
    height = _TOP + levels * _FRAME + _PAD
    total = max(root.count, 1)
    scale = (_WIDTH - 2 * _PAD) / total
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}"'
        f' viewBox="0 0 {_WIDTH} {height}" font-family="Verdana, sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="#f8f8f0"/>',
        f'<text x="{_WIDTH / 2}" y="24" text-anchor="middle" font-size="17">{escape(title)}</text>',
    ]
    for node, x, level in _boxes(root, _PAD, 0, scale):
        width = node.count * scale
        y = height - _PAD - (level + 1) * _FRAME
        share = 100 * node.count / total
        label = node.name
        fits = int((width - 6) // _CHAR)
        text = label if len(label) <= fits else (label[: fits - 2] + ".." if fits > 3 else "")
        parts.append(
            f'<g><title>{escape(label)} ({node.count} samples, {share:.2f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_FRAME - 1}"'
            f' fill="{_colour(label)}" rx="2"/>'
            + (f'<text x="{x + 3:.1f}" y="{y + 12}">{escape(text)}</text>' if text else "")
            + "</g>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
