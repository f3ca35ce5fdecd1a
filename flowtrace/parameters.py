"""A pipeline function's signature is its command line.

A pipeline file may define ``pipeline`` as a function instead of a plan;
``flowtrace run FILE ARGS`` then calls it with ARGS converted to the types
its signature declares::

    def pipeline(
        interval: Positive = 5,
        count: Positive | None = None,
        *,
        milliseconds: Annotated[bool, Option("-m")] = False,
    ) -> Pipeline:
        \"\"\"Summarize read latency as a histogram.

        Args:
            interval: seconds between histograms
            count: number of histograms, then stop
            milliseconds: histogram in milliseconds
        \"\"\"

gives ``flowtrace run FILE [-m] [interval [count]]`` and a ``--help``:

* a parameter that can be passed by position is a positional argument
  (optional when it has a default); ``*args`` takes any number;
* a keyword-only parameter is an option ``--name`` (underscores become
  hyphens); :class:`Option` adds short names (``-m``) and help;
* ``bool`` is a flag (``--name``; ``--no-name`` too when it defaults to
  true); ``int``, ``float``, ``str``, :class:`~pathlib.Path`, ``Literal[...]``
  (choices), :data:`Positive` and ``X | None`` are converted and checked;
  an unannotated parameter takes its default's type, or ``str``;
* help comes from the function's docstring: its text describes the command
  and each ``name: text`` line of its ``Args:`` section helps a parameter
  (``Option(help=...)`` wins over it).

Integers are whole numbers in ASCII digits (``int()`` would take "٣");
floats must be finite. Converting is done by :func:`command_line`'s parser,
so a bad value is one line naming the argument.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from .errors import PipelineFileError, describe

__all__ = [
    "Option",
    "Parameter",
    "Positive",
    "add_parameters",
    "parameters_of",
    "parse_docstring",
]


@dataclass(frozen=True)
class Option:
    """Command-line details of one parameter, given in ``Annotated[T, Option(...)]``:
    extra option ``names`` (``"-m"``), ``help`` text, the ``metavar`` shown
    in help, and a ``minimum`` and ``maximum`` for numbers. Several merge,
    later ones winning."""

    names: tuple[str, ...] = ()
    help: str | None = None
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __init__(
        self,
        *names: str,
        help: str | None = None,
        metavar: str | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        for name in names:
            if not re.fullmatch(r"-[A-Za-z0-9]|--[A-Za-z0-9][-A-Za-z0-9]*", name):
                raise ValueError(f"option name {name!r}: write -x or --long-name")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "help", help)
        object.__setattr__(self, "metavar", metavar)
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "maximum", maximum)


Positive = Annotated[int, Option(minimum=1)]
"""A whole number of at least 1 (an interval, a count, a PID)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a pipeline function as the command line sees it."""

    name: str
    kind: str  # "positional", "many" (*args) or "option"
    convert: Callable[[str], Any] | None  # None: a bool flag
    default: Any
    required: bool
    help: str | None
    names: tuple[str, ...]  # option strings (options only)
    metavar: str | None
    choices: tuple[Any, ...] | None

    @property
    def dest(self) -> str:
        return f"parameter:{self.name}"


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (the docstring without its ``Args:`` section) and
    the help of each parameter named in that section (``name: text``,
    continued on more deeply indented lines)."""
    description: list[str] = []
    helps: dict[str, str] = {}
    entry_indent: int | None = None  # inside Args: the indent of its entries
    current = ""
    for line in inspect.cleandoc(doc or "").splitlines():
        indent = len(line) - len(line.lstrip())
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            entry_indent, current = 0, ""
            continue
        if entry_indent is not None and line.strip() and indent == 0:
            entry_indent = None  # the section ended
        if entry_indent is None:
            description.append(line)
            continue
        if not line.strip():
            continue
        entry = re.fullmatch(r"\s+\*{0,2}(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if entry and (entry_indent == 0 or indent <= entry_indent):
            entry_indent, current = indent, entry.group(1)
            helps[current] = entry.group(2).strip()
        elif current:
            helps[current] = f"{helps[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), helps


def whole_number(text: str) -> int:
    """An integer written in ASCII digits with an optional sign."""
    if not re.fullmatch(r"[-+]?[0-9]+", text):
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def finite_number(text: str) -> float:
    """A finite decimal number."""
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _shown(bound: float) -> float:
    return int(bound) if float(bound).is_integer() else bound


def _within(
    convert: Callable[[str], Any], minimum: float | None, maximum: float | None
) -> Callable[[str], Any]:
    def checked(text: str) -> Any:
        value = convert(text)
        if minimum is not None and value < minimum:
            raise ValueError(f"{text!r} is less than {_shown(minimum)}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{text!r} is more than {_shown(maximum)}")
        return value

    return checked


def _as_argparse_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert`` with its ValueError message shown by argparse as is."""

    def converted(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    converted.__name__ = getattr(convert, "__name__", "value")
    return converted


def _unwrap(hint: Any) -> tuple[Any, list[Option]]:
    """``hint`` without ``Annotated`` and ``| None``: the type and its options."""
    options: list[Option] = []
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            options += [m for m in hint.__metadata__ if isinstance(m, Option)]
            hint = hint.__origin__
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(members) != 1:
                return hint, options
            hint = members[0]
        else:
            return hint, options


def _merge(options: list[Option]) -> Option:
    names: tuple[str, ...] = ()
    merged: dict[str, Any] = {"help": None, "metavar": None, "minimum": None, "maximum": None}
    for option in options:
        names += option.names
        for field in merged:
            if getattr(option, field) is not None:
                merged[field] = getattr(option, field)
    return Option(*names, **merged)


def _converter(kind: Any, where: str) -> tuple[Callable[[str], Any] | None, tuple[Any, ...] | None]:
    if kind is bool:
        return None, None
    if kind is int:
        return whole_number, None
    if kind is float:
        return finite_number, None
    if kind is str:
        return str, None
    if kind is Path:
        return Path, None
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if not all(isinstance(c, str | int) for c in choices):
            raise PipelineFileError(f"{where}: Literal choices must be strings or integers")
        return (whole_number if all(isinstance(c, int) for c in choices) else str), choices
    raise PipelineFileError(
        f"{where}: type {getattr(kind, '__name__', kind)!r} cannot be read from the command"
        " line; use int, float, str, bool, Path, Literal[...] or Positive"
    )


def parameters_of(function: Callable[..., Any], where: str) -> list[Parameter]:
    """The command-line parameters of ``function``; ``where`` names it in
    errors (:class:`PipelineFileError` for a signature the command line
    cannot express)."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise PipelineFileError(
            f"{where}: cannot read the parameter types: {describe(exc)}"
        ) from None
    _, helps = parse_docstring(function.__doc__)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or extension without one
        raise PipelineFileError(
            f"{where}: has no signature to read its arguments from;"
            " name a pipeline or a function written in Python that returns one"
        ) from None
    result = []
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            raise PipelineFileError(f"{where}: **{p.name} cannot come from the command line")
        has_default = p.default is not p.empty
        hint = hints.get(p.name, type(p.default) if has_default and p.default is not None else str)
        kind_, options = _unwrap(hint)
        option = _merge(options)
        convert, choices = _converter(kind_, f"{where}: parameter {p.name!r}")
        if convert is not None and (option.minimum, option.maximum) != (None, None):
            convert = _within(convert, option.minimum, option.maximum)
        if convert is None and p.kind is not p.KEYWORD_ONLY:
            raise PipelineFileError(
                f"{where}: bool parameter {p.name!r} must be keyword-only (after *) to be a flag"
            )
        if p.kind is p.KEYWORD_ONLY:
            kind = "option"
            names = (f"--{p.name.replace('_', '-')}", *option.names)
        else:
            kind = "many" if p.kind is p.VAR_POSITIONAL else "positional"
            names = ()
            if option.names:
                raise PipelineFileError(
                    f"{where}: positional parameter {p.name!r} cannot have option names;"
                    " make it keyword-only (after *)"
                )
        result.append(
            Parameter(
                name=p.name,
                kind=kind,
                convert=convert,
                default=p.default if has_default else None,
                required=not has_default and kind != "many",
                help=option.help or helps.get(p.name),
                names=names,
                metavar=option.metavar,
                choices=choices,
            )
        )
    return result


def add_parameters(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    parameters: Sequence[Parameter],
    where: str,
) -> None:
    """Add ``parameters`` to ``parser``; an option name flowtrace uses
    itself is a :class:`PipelineFileError` naming it."""
    for p in parameters:
        shown_default = "" if p.default in (None, False) else f" (default: {p.default})"
        help_text = (p.help or "") + shown_default or None
        kwargs: dict[str, Any] = {"dest": p.dest, "help": help_text}
        if p.choices is not None:
            kwargs["choices"] = p.choices
        try:
            if p.kind == "option":
                if p.convert is None:
                    action = argparse.BooleanOptionalAction if p.default else "store_true"
                    parser.add_argument(*p.names, action=action, default=bool(p.default), **kwargs)
                else:
                    parser.add_argument(
                        *p.names,
                        type=_as_argparse_type(p.convert),
                        default=p.default,
                        required=p.required,
                        metavar=p.metavar or p.name.upper(),
                        **kwargs,
                    )
            else:
                nargs = "*" if p.kind == "many" else (None if p.required else "?")
                parser.add_argument(
                    type=_as_argparse_type(p.convert or str),
                    nargs=nargs,
                    default=[] if p.kind == "many" else p.default,
                    metavar=p.metavar or p.name,
                    **kwargs,
                )
        except argparse.ArgumentError as exc:
            raise PipelineFileError(
                f"{where}: parameter {p.name!r} clashes with flowtrace's own option"
                f" ({exc.message}); rename it"
            ) from None


def call_arguments(
    parameters: Sequence[Parameter], values: argparse.Namespace
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments for the pipeline function, from
    parsed ``values``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in parameters:
        value = getattr(values, p.dest)
        if p.kind == "many":
            args += value
        elif p.kind == "positional":
            args.append(value)
        else:
            kwargs[p.name] = value
    return args, kwargs
