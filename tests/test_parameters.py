"""A pipeline function's signature as its command line: conversion and
checks, flags, help from the docstring, clashes, and the options of
flowtrace itself before or after the pipeline (no kernel needed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from clirun import flowtrace

from flowtrace import catalogue
from flowtrace.errors import PipelineFileError
from flowtrace.loader import load, load_pipeline
from flowtrace.parameters import (
    Option,
    Positive,
    add_parameters,
    call_arguments,
    parameters_of,
    parse_docstring,
)


class Refused(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise Refused(message)


def parsed(function: Any, *argv: str) -> tuple[list[Any], dict[str, Any]]:
    parameters = parameters_of(function, "test")
    parser = Parser(prog="test")
    add_parameters(parser, parameters, "test")
    return call_arguments(parameters, parser.parse_intermixed_args(list(argv)))


def tool(
    interval: Positive = 5,
    count: Positive | None = None,
    *,
    milliseconds: Annotated[bool, Option("-m")] = False,
    scale: float = 1.5,
    mode: Literal["a", "b"] = "a",
    color: bool = True,
    out: Path | None = None,
) -> None:
    """Does a thing.

    More about it.

    Args:
        interval: seconds per
            histogram
        count: how many
        milliseconds: in ms
    """


def test_positionals_options_and_flags_become_the_call() -> None:
    assert parsed(tool) == (
        [5, None],
        {"milliseconds": False, "scale": 1.5, "mode": "a", "color": True, "out": None},
    )
    args, kwargs = parsed(tool, "-m", "2", "--scale", "0.5", "7", "--no-color", "--mode=b")
    assert args == [2, 7]
    assert kwargs == {"milliseconds": True, "scale": 0.5, "mode": "b", "color": False, "out": None}
    assert parsed(tool, "--out", "x.svg")[1]["out"] == Path("x.svg")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0"], "argument interval: '0' is less than 1"),
        (["²"], "argument interval: '²' is not a whole number"),
        (["1", "٣"], "argument count: '٣' is not a whole number"),
        (["1_000"], "argument interval: '1_000' is not a whole number"),
        (["--scale", "nan"], "argument --scale: 'nan' is not a finite number"),
        (["--mode", "c"], "argument --mode: invalid choice: 'c'"),
        (["1", "2", "3"], "unrecognized arguments: 3"),
    ],
)
def test_bad_values_are_refused_naming_the_argument(argv: list[str], message: str) -> None:
    with pytest.raises(Refused) as refused:
        parsed(tool, *argv)
    assert str(refused.value).startswith(message)


Port = Annotated[int | None, Option("-P", minimum=1, maximum=65535)]


def test_bounds_are_checked_both_ways_and_bounds_themselves_pass() -> None:
    def bounded(*, port: Port = None) -> None: ...

    assert parsed(bounded, "-P", "1")[1] == {"port": 1}
    assert parsed(bounded, "--port", "65535")[1] == {"port": 65535}
    for value, message in [("0", "'0' is less than 1"), ("65536", "'65536' is more than 65535")]:
        with pytest.raises(Refused) as refused:
            parsed(bounded, "-P", value)
        assert str(refused.value) == f"argument --port/-P: {message}"


def test_help_comes_from_the_docstring() -> None:
    description, helps = parse_docstring(tool.__doc__)
    assert description == "Does a thing.\n\nMore about it."
    assert helps == {
        "interval": "seconds per histogram",
        "count": "how many",
        "milliseconds": "in ms",
    }


def test_var_positional_takes_any_number() -> None:
    def many(*paths: str, verbose: bool = False) -> None: ...

    assert parsed(many, "a", "b") == (["a", "b"], {"verbose": False})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(flag: bool = False): ...", "bool parameter 'flag' must be keyword-only"),
        ("def f(**rest): ...", "**rest cannot come from the command line"),
        ("def f(x: list[int]): ...", "type 'list' cannot be read from the command line"),
        ("def f(x: 'Nope'): ...", "cannot read the parameter types: NameError"),
    ],
)
def test_signatures_the_command_line_cannot_express(source: str, message: str) -> None:
    scope: dict[str, Any] = {}
    exec(source, scope)
    with pytest.raises(PipelineFileError) as refused:
        parameters_of(scope["f"], "test")
    assert message in str(refused.value)


def test_a_parameter_clashing_with_flowtraces_own_option_is_refused() -> None:
    def clash(*, duration: float = 1.0) -> None: ...

    parser = Parser()
    parser.add_argument("--duration")
    with pytest.raises(PipelineFileError, match="parameter 'duration' clashes with flowtrace's"):
        add_parameters(parser, parameters_of(clash, "test"), "test")


PIPELINE_FILE = """
from typing import Annotated

from flowtrace.parameters import Option, Positive
from flowtrace.testing import CollectSink, ListSource


def pipeline(first: Positive, *, twice: Annotated[bool, Option("-t")] = False):
    \"\"\"Emit FIRST (twice with -t).

    Args:
        first: the number
    \"\"\"
    return ListSource([first] * (2 if twice else 1)) | CollectSink()
"""


def test_load_pipeline_parses_arguments_as_the_command_line_does(tmp_path: Path) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(PIPELINE_FILE)
    built = load_pipeline(str(path), ["-t", "3"])
    assert built.name == "numbers"
    assert built.source.events == [3, 3]  # type: ignore[attr-defined]
    with pytest.raises(PipelineFileError, match="argument first: '0' is less than 1"):
        load_pipeline(str(path), ["0"])
    loaded = load(str(path))
    assert loaded.description == "Emit FIRST (twice with -t)."


def test_pipeline_help_lists_its_arguments_and_flowtraces_options(tmp_path: Path) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(PIPELINE_FILE)
    result = flowtrace("run", str(path), "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"usage: flowtrace run {path}")  # a command that runs it
    assert "Emit FIRST (twice with -t)." in out
    assert "numbers arguments:\n  first " in out and "the number" in out
    assert "--twice, -t" in out and "--duration SECONDS" in out


def test_flowtrace_options_before_or_after_the_file_and_after_its_arguments(
    tmp_path: Path,
) -> None:
    path = tmp_path / "numbers.py"
    path.write_text(PIPELINE_FILE)
    for argv in (
        ["--output", "ndjson", str(path), "7"],
        [str(path), "7", "--output", "ndjson"],
        [str(path), "-o", "ndjson", "7"],
        ["-q", str(path), "--", "7"],
    ):
        result = flowtrace("run", *argv)
        assert result.returncode == 0, (argv, result.stderr)
    negative = flowtrace("run", str(path), "--", "-7")
    assert negative.returncode == 2
    assert "argument first: '-7' is less than 1" in negative.stderr


def test_shipped_pipelines_by_name_from_any_directory(tmp_path: Path) -> None:
    import subprocess

    from clirun import FLOWTRACE

    names = [lesson.name for lesson in catalogue.lessons()]
    assert {"sys_sync", "vfsreadlat", "disklatency", "nodejs_http_server"} <= set(names)
    assert catalogue.find("vfsreadlat") == catalogue.find("vfsreadlat.py")
    assert catalogue.find("../vfsreadlat") is None
    result = subprocess.run(
        [FLOWTRACE, "run", "vfsreadlat", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flowtrace run vfsreadlat ")
    missing = subprocess.run(
        [FLOWTRACE, "run", "no_such_lesson"], cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert missing.stderr == (
        "flowtrace: error: no pipeline file 'no_such_lesson': check the path, or see"
        " `flowtrace list` for the shipped pipelines\n"
    )


def test_list_prints_every_shipped_pipeline_with_its_summary() -> None:
    result = flowtrace("list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(catalogue.lessons())
    width = max(len(lesson.name) for lesson in catalogue.lessons())
    for lesson, line in zip(catalogue.lessons(), lines, strict=True):
        assert line == f"{lesson.name:<{width}}  {lesson.summary}"
    vfs = next(line for line in lines if line.startswith("vfsreadlat "))
    assert vfs.endswith("Lesson 11, vfsreadlat: a log2 histogram of read latency per interval.")


def test_version() -> None:
    from importlib.metadata import version

    result = flowtrace("--version")
    assert (result.returncode, result.stdout) == (0, f"flowtrace {version('flowtrace')}\n")


def shipped_files() -> list[Path]:
    """The lessons and the bcc tools (pipelines/tools/, run by path)."""
    tools = sorted((catalogue.FOLDER / "tools").glob("*.py"))
    assert tools, "no pipelines/tools/*.py"
    return [lesson.path for lesson in catalogue.lessons()] + tools


def test_no_lesson_parses_its_own_arguments() -> None:
    for path in shipped_files():
        text = path.read_text()
        assert "args: list[str]" not in text and "sys.argv" not in text, path
        assert "argparse" not in text and "_positive" not in text, path


def test_every_lesson_help_works() -> None:
    for path in shipped_files():
        loaded = load(str(path))
        parser = argparse.ArgumentParser(prog=loaded.name)
        loaded.add_arguments(parser)
        assert parser.format_help(), path
        for p in loaded.parameters:
            assert p.help, f"{path}: parameter {p.name!r} has no help (Args: in its docstring)"
