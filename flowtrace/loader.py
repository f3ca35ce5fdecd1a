"""Loading a pipeline from a Python file, with one-line errors for bad files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .errors import EventDefinitionError, PipelineDefinitionError, PipelineFileError
from .stages import Pipeline

__all__ = ["load_pipeline"]

_DEFINITION_ERRORS = (PipelineDefinitionError, EventDefinitionError)


def _split(spec: str) -> tuple[Path, str]:
    path, sep, attr = spec.rpartition(":")
    if sep and attr.isidentifier() and not Path(spec).exists():
        return Path(path), attr
    return Path(spec), "pipeline"


def load_pipeline(spec: str, args: list[str] | None = None) -> Pipeline:
    """The pipeline named by ``FILE[:ATTR]`` (ATTR defaults to ``pipeline``).

    ATTR is a :class:`Pipeline`, or a function taking the remaining command
    line arguments (a list of str) and returning one. A function rejects
    bad arguments by raising :class:`PipelineFileError`, ``ValueError``
    (``int("x")``) or ``SystemExit`` (its own argparse); each becomes a
    one-line :class:`PipelineFileError`.
    """
    path, attr = _split(spec)
    args = args or []
    if not path.is_file():
        raise PipelineFileError(f"no pipeline file {str(path)!r}: check the path")
    try:
        code = compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as exc:
        raise PipelineFileError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again"
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
        raise PipelineFileError(
            f"{path}: failed while loading: {type(exc).__name__}: {exc}"
        ) from None
    if not hasattr(module, attr):
        raise PipelineFileError(
            f"{path} defines no {attr!r}: define `{attr} = source | ... | sink`"
            " or name another object with FILE:NAME"
        )
    target = getattr(module, attr)
    if isinstance(target, Pipeline):
        if args:
            raise PipelineFileError(f"{path}:{attr} takes no arguments, got {' '.join(args)!r}")
        return target
    if callable(target):
        try:
            built = target(args)
        except SystemExit as exc:  # a factory's argparse rejected the arguments
            raise PipelineFileError(f"{path}: bad arguments {' '.join(args)!r}") from exc
        except _DEFINITION_ERRORS as exc:
            raise PipelineFileError(f"{path}: {exc}") from None
        except ValueError as exc:  # int("x") and the like on an argument
            raise PipelineFileError(
                f"{path}: bad arguments {' '.join(args)!r}: {' '.join(str(exc).split())}"
            ) from None
        if isinstance(built, Pipeline):
            return built
        raise PipelineFileError(
            f"{path}:{attr}(args) returned {type(built).__name__}, not a Pipeline"
        )
    raise PipelineFileError(
        f"{path}:{attr} is a {type(target).__name__}, not a Pipeline"
        " (build it as source | ... | sink)"
    )
