"""The documentation's code runs: every python and sh block of README.md and
docs/*.md says how it is tested (see tests/docblocks.py for the markers), and
the blocks marked ``run`` are executed here, as written.

A python block is executed as a module; one that awaits at top level is run
in an event loop and runs its own pipelines. Otherwise every pipeline the
block binds at top level is run for 0.3 s: against the kernel in a
``run: kernel`` block, and never with a kernel source in a plain ``run``
block (mark it ``run: kernel``). An sh block's commands must exit with 0.
"""

from __future__ import annotations

import ast
import functools
import inspect
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from clirun import flowtrace
from docblocks import CODE, DATA, DOCS, ROOT, Block, all_blocks, blocks, commands, marked

from flowtrace import Pipeline
from flowtrace.kernel_source import KernelSource
from flowtrace.trace_pipe import TracePipeSource

RUN_OPTIONS = {"kernel", "after examples"}
EXAMPLE_FILE = ROOT / "docs" / "operators.md"  # the one tests/test_operators_custom.py reads
RUN_FOR = 0.3  # long enough for a kernel source to refresh its loss counters once (0.25 s)


def _problem(block: Block) -> str | None:
    """What is wrong with how ``block`` is marked, or None."""
    if not block.language:
        return "no language after ``` (say text for output)"
    if block.language in DATA:
        return None if block.marker is None else f"a {block.language} block is not run: no marker"
    if block.language not in CODE:
        return f"unknown language {block.language!r}: one of {', '.join(CODE + DATA)}"
    if block.marker is None:
        return "no marker: say how it is tested (<!-- run -->, <!-- not run: REASON -->, ...)"
    if block.marker == "run" and not block.options <= RUN_OPTIONS:
        return f"unknown run options {sorted(block.options - RUN_OPTIONS)}"
    if block.marker == "not run" and not block.argument:
        return "<!-- not run: REASON --> needs its reason"
    if block.marker == "recipe" and not (block.language == "sh" and block.argument.isidentifier()):
        return "a recipe is an sh block named <!-- recipe: NAME --> (NAME an identifier)"
    if block.marker == "example" and block.path != EXAMPLE_FILE:
        return f"example blocks are run from {EXAMPLE_FILE.name} only"
    if block.marker == "excerpt" and not (ROOT / block.argument).is_file():
        return f"excerpt of {block.argument!r}: no such file"
    return None


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_fence_is_found(path: Path) -> None:
    fences = [line for line in path.read_text().splitlines() if line.startswith("```")]
    assert len(fences) == 2 * len(blocks(path))


def test_every_code_block_says_how_it_is_tested() -> None:
    found = all_blocks()
    problems = [f"{b.where}: {p}" for b in found if (p := _problem(b))]
    assert problems == []


def test_no_block_is_run_twice_or_named_twice() -> None:
    named = [(b.marker, b.argument) for b in all_blocks() if b.marker in ("recipe", "example")]
    assert len(named) == len(set(named))


@pytest.mark.parametrize("block", marked("excerpt"), ids=lambda b: b.where)
def test_an_excerpt_is_verbatim_in_its_file(block: Block) -> None:
    assert block.text in (ROOT / block.argument).read_text(), block.where


def _runs(kernel: bool) -> list[Block]:
    return [b for b in marked("run") if ("kernel" in b.options) == kernel]


@pytest.fixture
def module(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[types.ModuleType]:
    """A fresh module for a block to run in (registered: msgspec and
    dataclasses look their classes' modules up), in an empty directory for
    what python blocks write; sh blocks run from the repository."""
    block: Block = request.param
    monkeypatch.chdir(tmp_path if block.language == "python" else ROOT)
    module = types.ModuleType(f"doc_block_{block.path.stem}_{block.line}")
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


def _kernel_source(pipeline: Pipeline) -> bool:
    return isinstance(pipeline.source, (KernelSource, TracePipeSource))


def run_block(block: Block, namespace: dict[str, Any], kernel: bool) -> None:
    """Execute ``block`` in ``namespace`` as described in the module docstring."""
    if block.language == "sh":
        for line in commands(block):
            argv = shlex.split(line, comments=True)
            assert argv[0] == "flowtrace", f"{block.where}: only flowtrace commands run: {line}"
            result = flowtrace(*argv[1:])
            assert result.returncode == 0, f"{block.where}: {line}\n{result.stderr}"
        return
    if "after examples" in block.options:
        for example in blocks(block.path):
            if example.marker == "example":
                exec(compile(example.text, example.where, "exec"), namespace)
    code = compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:

        async def awaited() -> None:
            await eval(code, namespace)

        anyio.run(awaited)
        return
    exec(code, namespace)
    pipelines = {k: v for k, v in namespace.items() if isinstance(v, Pipeline)}
    for name, pipeline in pipelines.items():
        if not kernel:
            assert not _kernel_source(pipeline), f"{block.where}: {name} needs run: kernel"
        anyio.run(functools.partial(pipeline.run, duration=RUN_FOR))


@pytest.mark.parametrize("module", _runs(kernel=False), ids=lambda b: b.where, indirect=True)
def test_a_plain_block_runs(module: types.ModuleType, request: pytest.FixtureRequest) -> None:
    run_block(request.node.callspec.params["module"], module.__dict__, kernel=False)


@pytest.mark.kernel
@pytest.mark.parametrize("module", _runs(kernel=True), ids=lambda b: b.where, indirect=True)
def test_a_kernel_block_runs(module: types.ModuleType, request: pytest.FixtureRequest) -> None:
    run_block(request.node.callspec.params["module"], module.__dict__, kernel=True)

