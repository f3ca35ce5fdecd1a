"""Loading a pipeline from a Python file, with one-line errors for bad files.

A pipeline file defines ``pipeline`` (or the name after ``FILE:``): a plan,
or a function returning one whose signature is its command line (see
:mod:`flowtrace.parameters`). ``FILE`` may also name a shipped pipeline
(``disklatency``; see :mod:`flowtrace.catalogue`) when no such file exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalogue
from .errors import (
    DEBUG_HINT,
    EventDefinitionError,
    PipelineDefinitionError,
    PipelineFileError,
    describe,
    raised_at,
)
from .parameters import Parameter, add_parameters, call_arguments, parameters_of, parse_docstring
from .stages import Operator, Pipeline, Sink, Source

__all__ = ["PipelineFile", "load", "load_pipeline"]

_DEFINITION_ERRORS = (PipelineDefinitionError, EventDefinitionError)


def _split(spec: str) -> tuple[Path, str]:
    path, sep, attr = spec.rpartition(":")
    if sep and attr.isidentifier() and not Path(spec).exists():
        return Path(path), attr
    return Path(spec), "pipeline"


def _resolve(path: Path) -> Path:
    if path.is_file():
        return path
    shipped = catalogue.find(str(path)) if len(path.parts) == 1 else None
    if shipped is not None:
        return shipped
    raise PipelineFileError(
        f"no pipeline file {str(path)!r}: check the path, or see `flowtrace list`"
        " for the shipped pipelines"
    )


@dataclass(frozen=True)
class PipelineFile:
    """A loaded pipeline file: the plan or function it defines, and the
    command line that function takes (none for a plan)."""

    path: Path
    attr: str
    target: Pipeline | Callable[..., Any]
    parameters: tuple[Parameter, ...]
    description: str

    @property
    def name(self) -> str:
        """The pipeline's name: the file name without ``.py`` (and
        ``:ATTR`` when it is not ``pipeline``)."""
        return self.path.stem if self.attr == "pipeline" else f"{self.path.stem}:{self.attr}"

    @property
    def command_name(self) -> str:
        """What to write after ``flowtrace run`` to run this pipeline: a
        shipped pipeline's name, or else the file (and ``:ATTR``) as given."""
        shipped = catalogue.find(self.path.stem)
        if self.attr == "pipeline" and shipped == self.path.resolve():
            return self.path.stem
        return str(self.path) if self.attr == "pipeline" else f"{self.path}:{self.attr}"

    def build(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Pipeline:
        """The pipeline, built with these (already converted) arguments and
        named after the file unless it names itself."""
        if isinstance(self.target, Pipeline):
            return self._named(self.target)
        where = f"{self.path}"
        try:
            built = self.target(*args, **(kwargs or {}))
        except PipelineFileError:
            raise
        except _DEFINITION_ERRORS as exc:
            raise PipelineFileError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise PipelineFileError(
                f"{where}: bad arguments: {' '.join(str(exc).split())};"
                f" see flowtrace run {self.command_name} --help"
            ) from None
        except Exception as exc:  # a bug in the pipeline file (or what it calls)
            raise _failed(f"{self.path}:{self.attr}()", exc, self.path) from exc
        if isinstance(built, Pipeline):
            return self._named(built)
        raise PipelineFileError(
            f"{self.path}:{self.attr}() returned {_what(built)}, not a Pipeline: {_PIPELINE_FIX}"
        )

    def _named(self, pipeline: Pipeline) -> Pipeline:
        return pipeline if pipeline.name else pipeline.replace(name=self.name)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the function's parameters to ``parser`` (a group of their own)."""
        if self.parameters:
            group = parser.add_argument_group(f"{self.name} arguments")
            add_parameters(group, self.parameters, str(self.path))

    def build_from(self, values: argparse.Namespace) -> Pipeline:
        """The pipeline, built with the arguments parsed into ``values``."""
        args, kwargs = call_arguments(self.parameters, values)
        return self.build(args, kwargs)


def load(spec: str) -> PipelineFile:
    """The pipeline file ``FILE[:ATTR]`` (ATTR defaults to ``pipeline``), or
    the shipped pipeline of that name; raises :class:`PipelineFileError`
    with one line for every problem."""
    given, attr = _split(spec)
    path = _resolve(given)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PipelineFileError(f"cannot read {str(path)!r}: {exc.strerror}; check it") from None
    if b"\0" in text:  # Python refuses it with an error of its own kind
        line = text.count(b"\n", 0, text.index(b"\0")) + 1
        raise PipelineFileError(
            f"{path}:{line}: a NUL byte, not Python text; fix the file or write it again"
        )
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as exc:
        raise PipelineFileError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # nested too deep to compile
        raise PipelineFileError(
            f"{path}: cannot compile: {describe(exc)}; fix the file and run again"
        ) from None
    module_name = f"flowtrace_pipeline_{abs(hash(str(path.resolve())))}"
    spec_ = importlib.util.spec_from_file_location(module_name, path)
    assert spec_ is not None
    module = importlib.util.module_from_spec(spec_)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except _DEFINITION_ERRORS as exc:  # a plan that does not hold together: its own line
        del sys.modules[module_name]
        raise PipelineFileError(f"{path}: {exc}") from None
    except Exception as exc:
        del sys.modules[module_name]
        raise _failed(f"{path}: failed while loading", exc, path) from exc
    if not hasattr(module, attr):
        raise PipelineFileError(
            f"{path} defines no {attr!r}: define `{attr} = source | ... | sink`"
            " or name another object with FILE:NAME"
        )
    target = getattr(module, attr)
    module_doc = (module.__doc__ or "").strip()
    if isinstance(target, Pipeline):
        return PipelineFile(path, attr, target, (), module_doc)
    if callable(target):
        parameters = tuple(parameters_of(target, f"{path}:{attr}"))
        described, _ = parse_docstring(target.__doc__)
        return PipelineFile(path, attr, target, parameters, described or module_doc)
    raise PipelineFileError(f"{path}:{attr} is {_what(target)}, not a Pipeline: {_PIPELINE_FIX}")


_PIPELINE_FIX = "FILE:NAME names a pipeline (source | ... | sink) or a function returning one"


def _what(value: Any) -> str:
    """What ``value`` is, in a message: a source, operator or sink says so."""
    kind = type(value).__name__
    for stage in (Source, Operator, Sink):
        if isinstance(value, stage):
            return f"a {stage.__name__.lower()} ({kind})"
    return f"a {kind}"


def _failed(what: str, exc: Exception, path: Path) -> PipelineFileError:
    """The one line for an exception a pipeline file raised: what failed,
    the exception and the line of the file it came from."""
    where = raised_at(exc, str(path))
    return PipelineFileError(
        f"{what}: {describe(exc)} (at {where}); fix the pipeline file ({DEBUG_HINT})"
    )


class _OneLine(argparse.ArgumentParser):
    """A parser whose usage errors raise instead of printing and exiting."""

    def error(self, message: str) -> Any:
        raise PipelineFileError(f"{message}; see {self.prog} --help")


def load_pipeline(spec: str, args: Sequence[str] | None = None) -> Pipeline:
    """The pipeline of ``FILE[:ATTR]`` (see :func:`load`), its function
    called with the command-line arguments ``args`` (strings, parsed as
    ``flowtrace run FILE ARGS`` parses them)."""
    loaded = load(spec)
    parser = _OneLine(prog=f"flowtrace run {loaded.command_name}", add_help=False)
    loaded.add_arguments(parser)
    if not loaded.parameters and args:
        raise PipelineFileError(
            f"{loaded.path}:{loaded.attr} takes no arguments, got {' '.join(args)!r}"
        )
    return loaded.build_from(parser.parse_intermixed_args(list(args or [])))
