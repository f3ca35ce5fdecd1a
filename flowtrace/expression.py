"""Pipelines written as one Python expression (``flowtrace run -e EXPR``).

The expression is parsed with :mod:`ast` first, so a syntax error is reported
with its column before anything is imported or built. It is then evaluated
with only the names of :func:`expression_names` and no other builtins:

* the typed sources of :mod:`flowtrace.typed_sources` and
  :mod:`flowtrace.argument_sources` (``tracepoint``, ``tracepoints``,
  ``syscall_entry``, ``syscall_exit``, ``raw_tracepoint``, ``uprobe``,
  ``usdt``);
* sources: every entry point in the ``flowtrace.sources`` group, by its name
  (``sync_calls()``, ``task_switches()``, a third-party package's own);
* ``F`` and every operator of :mod:`flowtrace.operators` (``filter``,
  ``count``, ``log2_histogram``, ``join``, ``Sum``, ...);
* the kernel types of :mod:`flowtrace.ktypes` (``u32``, ``Char``, ...) and
  ``Arg`` (an argument by position, for typed sources);
* sinks: every entry point in the ``flowtrace.sinks`` group, by its name
  (``console``, ``ndjson``, ``socket``, ``metrics``), called like the class
  (``ndjson("out.ndjson")``);
* the builtins in :data:`SAFE_BUILTINS`.

Where a plugin's name is also one of flowtrace's own, flowtrace's wins (an
entry-point source named ``count`` is not reachable; the operator is). Names are loaded only
when the expression uses them, so a broken plugin affects only expressions
that name it. Attributes starting with ``_`` cannot be used. This keeps
expressions to pipeline building; it is not a sandbox (the command runs as
the user who typed it).

The value must be a pipeline (``source | ... | sink``), a source, or a source
followed by operators; the last two print to the console sink. Every problem
is one :class:`ExpressionError` line. An expression is at most
:data:`MAX_CHARS` characters long and nests at most :data:`MAX_DEPTH` levels
(a pipeline of 30 stages nests about 40); longer or deeper ones are refused
before anything is built (a pipeline that large belongs in a file).
"""

from __future__ import annotations

import ast
import builtins
import difflib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import msgspec

from . import argument_sources, ktypes, operators, typed_sources
from .errors import FlowtraceError, PipelineFileError, one_line
from .stages import Flow, Operator, Pipeline, Sink, Source

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "SAFE_BUILTINS",
    "TYPED_SOURCES",
    "ExpressionError",
    "NameEntry",
    "evaluate",
    "expression_names",
    "item_line",
    "parse",
]

SOURCE_GROUP = "flowtrace.sources"
SINK_GROUP = "flowtrace.sinks"
DEFAULT_SINK = "console"
GROUPS = ("source", "operator", "kernel type", "sink", "builtin")
_STAGE_GROUPS = ("source", "operator", "sink")

TRACEPOINT_SOURCES = ("tracepoint", "tracepoints", "syscall_entry", "syscall_exit")
ARGUMENT_SOURCES = ("raw_tracepoint", "uprobe", "usdt")
TYPED_SOURCES = (*TRACEPOINT_SOURCES, *ARGUMENT_SOURCES)
"""The typed sources an expression may use."""

SAFE_BUILTINS = (
    "abs",
    "all",
    "any",
    "bool",
    "dict",
    "float",
    "frozenset",
    "int",
    "len",
    "list",
    "max",
    "min",
    "range",
    "round",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
)
"""The builtins an expression may use: plain values and their conversions."""


MAX_CHARS = 65_536
"""Longest expression accepted, in characters."""
MAX_DEPTH = 200
"""Deepest nesting accepted, in levels of the expression's syntax tree."""
_TOO_BIG = "write the pipeline in a file (flowtrace run FILE)"


class ExpressionError(PipelineFileError):
    """A ``-e`` expression cannot be parsed, names something unknown, or does
    not evaluate to a pipeline (CLI exit status 2)."""


@dataclass(frozen=True)
class NameEntry:
    """One name an expression may use: its group and how to get its value."""

    group: str  # one of GROUPS
    load: Callable[[], Any]


def _attributes(module: ModuleType, names: Iterable[str], group: str) -> dict[str, NameEntry]:
    return {name: NameEntry(group, functools.partial(getattr, module, name)) for name in names}


def _entry_points(group: str, kind: str) -> dict[str, NameEntry]:
    return {ep.name: NameEntry(kind, ep.load) for ep in entry_points(group=group)}


def expression_names() -> dict[str, NameEntry]:
    """Every name an expression may use (see the module docstring), not yet
    loaded: plugin entry points are imported only when :meth:`NameEntry.load`
    runs."""
    names = _attributes(builtins, SAFE_BUILTINS, "builtin")
    names |= _entry_points(SINK_GROUP, "sink")
    names |= _entry_points(SOURCE_GROUP, "source")
    names |= _attributes(ktypes, ktypes.__all__, "kernel type")
    names |= _attributes(argument_sources, ["Arg"], "kernel type")
    names |= _attributes(operators, operators.__all__, "operator")
    names |= _attributes(typed_sources, TRACEPOINT_SOURCES, "source")
    names |= _attributes(argument_sources, ARGUMENT_SOURCES, "source")
    return names


def parse(text: str) -> ast.Expression:
    """``text`` as an expression tree; raises :class:`ExpressionError` for a
    syntax error (with its column), an attribute starting with ``_``, or an
    expression longer than :data:`MAX_CHARS` or nested deeper than
    :data:`MAX_DEPTH`."""
    if len(text) > MAX_CHARS:
        raise ExpressionError(
            f"-e: the expression is {len(text)} characters long, more than {MAX_CHARS}; {_TOO_BIG}"
        )
    try:
        tree = ast.parse(text, "<-e>", mode="eval")
    except SyntaxError as exc:
        where = _where(exc.lineno or 1, exc.offset or 1, text)
        raise ExpressionError(f"-e: syntax error {where}: {exc.msg}") from None
    except (RecursionError, MemoryError):  # Python's parser gave up on the nesting
        raise ExpressionError(_too_deep()) from None
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionError(_too_deep())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            where = _where(node.lineno, node.col_offset + 1, text)
            raise ExpressionError(
                f"-e: attribute {node.attr!r} {where}: attributes starting with '_'"
                " cannot be used in an expression"
            )
    return tree


def _too_deep() -> str:
    return f"-e: the expression nests more than {MAX_DEPTH} levels deep; {_TOO_BIG}"


def _depth(tree: ast.AST) -> int:
    """How many levels ``tree`` nests (counted without recursion)."""
    deepest = 0
    level = [tree]
    while level:
        deepest += 1
        if deepest > MAX_DEPTH:
            break  # deep enough to refuse: stop counting
        level = [child for node in level for child in ast.iter_child_nodes(node)]
    return deepest


def _where(line: int, column: int, text: str) -> str:
    return f"at column {column}" if "\n" not in text else f"at line {line}, column {column}"


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the expression binds itself: lambda parameters, comprehension
    targets, ``:=`` targets."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            bound |= {p.arg for p in params if p is not None}
        elif isinstance(node, (ast.comprehension, ast.NamedExpr)):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return bound


def _used_names(tree: ast.AST) -> list[ast.Name]:
    """The names ``tree`` reads, leftmost first."""
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return sorted(names, key=lambda n: (n.lineno, n.col_offset))


def unknown_name_message(name: str, known: dict[str, NameEntry], where: str = "") -> str:
    """One line naming ``name``, with close matches among ``known`` if there
    are any, else every known source and sink."""
    head = f"-e: unknown name {name!r}{' ' + where if where else ''}"
    close = difflib.get_close_matches(name, list(known), n=4, cutoff=0.6)
    if close:
        return f"{head}; did you mean {', '.join(close)}?"
    groups = [
        f"{group}s: {', '.join(sorted(n for n, e in known.items() if e.group == group)) or 'none'}"
        for group in GROUPS
    ]
    return f"{head}; the names are {'; '.join(groups)}"


def _check_piped_names(tree: ast.AST, known: dict[str, NameEntry], text: str) -> None:
    """A stage factory piped without calling it (``| console``) is one line."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
            continue
        for side in (node.left, node.right):
            entry = known.get(side.id) if isinstance(side, ast.Name) else None
            if isinstance(side, ast.Name) and entry and entry.group in _STAGE_GROUPS:
                where = _where(side.lineno, side.col_offset + 1, text)
                raise ExpressionError(
                    f"-e: {entry.group} {side.id!r} {where} is not called: write {side.id}()"
                )


def _globals(tree: ast.Expression, text: str) -> dict[str, Any]:
    known = expression_names()
    bound = _bound_names(tree)
    _check_piped_names(tree, known, text)
    scope: dict[str, Any] = {"__builtins__": {}}
    for node in _used_names(tree):
        if node.id in scope or node.id in bound:
            continue
        entry = known.get(node.id)
        if entry is None:
            where = _where(node.lineno, node.col_offset + 1, text)
            raise ExpressionError(unknown_name_message(node.id, known, where))
        try:
            scope[node.id] = entry.load()
        except Exception as exc:
            raise ExpressionError(
                f"-e: {entry.group} {node.id!r} failed to load: {type(exc).__name__}:"
                f" {one_line(exc)}; reinstall the package that provides it"
            ) from None
    return scope


def item_line(item: Any) -> str:
    """How the default console sink prints an item that is neither a
    histogram nor a count table: an event as ``field=value ...``, another
    record as ``kind: field=value ...`` (fields that are None left out),
    anything else with ``str``."""
    if not isinstance(item, msgspec.Struct):
        return str(item)
    fields = " ".join(
        f"{name}={value!r}"
        for name in item.__struct_fields__
        if (value := getattr(item, name)) is not None
    )
    kind = getattr(item, "kind", "event")
    return fields if kind == "event" else f"{kind}: {fields}"


def evaluate(text: str) -> Pipeline:
    """The pipeline ``text`` describes (see the module docstring); raises
    :class:`ExpressionError` with one line for every problem, including
    errors the pipeline's parts raise while it is built."""
    tree = parse(text)
    scope = _globals(tree, text)
    try:
        return _as_pipeline(eval(compile(tree, "<-e>", "eval"), scope), scope)
    except NameError as exc:  # a name bound in one lambda, used outside it
        name = getattr(exc, "name", None) or str(exc)
        raise ExpressionError(unknown_name_message(name, expression_names())) from None
    except ExpressionError:
        raise
    except FlowtraceError as exc:  # a part refused how it is used (a field it cannot read)
        raise ExpressionError(f"-e: {one_line(exc)}") from None
    except Exception as exc:
        raise ExpressionError(f"-e: {type(exc).__name__}: {one_line(exc)}") from None


def _as_pipeline(value: Any, scope: dict[str, Any]) -> Pipeline:
    if isinstance(value, Pipeline):
        return value
    if isinstance(value, (Source, Flow)):
        return value | _default_sink()
    if isinstance(value, Operator):
        raise ExpressionError(
            f"-e: the expression is the operator {value.stage_name()!r} with no source in"
            " front of it: write SOURCE | operator"
        )
    if isinstance(value, Sink):
        raise ExpressionError(
            f"-e: the expression is the sink {value.stage_name()!r} alone: write SOURCE | sink"
        )
    named = [name for name, v in scope.items() if v is value]
    if callable(value) and named:
        raise ExpressionError(
            f"-e: the expression is {named[0]!r} itself, not called: write {named[0]}()"
        )
    raise ExpressionError(
        f"-e: the expression is a {type(value).__name__}, not a pipeline:"
        " write SOURCE [| operator ...] [| sink]"
    )


def _default_sink() -> Sink[Any]:
    for ep in entry_points(group=SINK_GROUP, name=DEFAULT_SINK):
        sink = ep.load()(line=item_line)
        if isinstance(sink, Sink):
            return sink
    raise ExpressionError(
        f"-e: no {DEFAULT_SINK!r} sink in the {SINK_GROUP!r} entry points to print with:"
        " reinstall flowtrace (pip install -e .) or end the expression with | SINK"
    )
