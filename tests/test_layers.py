"""The import graph: layers point one way and nothing imports itself back.

core (``flowtrace/``) <- plugins (``sources/``, ``sinks/``) <- pipelines.
Every import statement counts, wherever it stands (module level, inside a
function, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"flowtrace": ROOT / "flowtrace", "flowtrace.sources": ROOT / "sources",
            "flowtrace.sinks": ROOT / "sinks"}  # fmt: skip
PLUGINS = ("flowtrace.sources", "flowtrace.sinks")


def is_plugin(module: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in PLUGINS)


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (plugins under
    their installed names; the symlinks in flowtrace/ are not walked twice)."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if package == "flowtrace" and path.relative_to(folder).parts[0] in ("sources", "sinks"):
                continue
            parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The flowtrace modules ``name`` imports (a package import counts as its
    ``__init__``; ``from package import module`` as that module)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in known]
            targets = targets or [origin]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports(name, path, known)) for name, path in found.items()}


def test_the_graph_sees_the_imports_it_should() -> None:
    edges = graph()
    assert "flowtrace.runtime" in edges["flowtrace.stages"]
    assert "flowtrace.stages" in edges["flowtrace.sinks.ndjson"]
    assert "flowtrace.sinks.reporting" in edges["flowtrace.sinks.ndjson"]
    assert "flowtrace.operators.windows" in edges["flowtrace.operators"]


def test_core_imports_no_plugin() -> None:
    offenders = {
        f"{module} imports {target}"
        for module, targets in graph().items()
        if not is_plugin(module)
        for target in targets
        if is_plugin(target)
    }
    assert not offenders


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
