"""The ``flowtrace`` command: run, explain, list, plot, doctor.

``flowtrace run PIPELINE [ARGS] [OPTIONS]``: PIPELINE is a file
(``FILE[:NAME]``, NAME defaults to ``pipeline``) or the name of a shipped
pipeline (``flowtrace list``); ARGS are the pipeline's own (its function's
signature, see ``flowtrace run PIPELINE --help``). flowtrace's options go
before or after PIPELINE; ``--`` ends option parsing.

``run`` also takes ``--sink NAME:ARG`` (repeatable; sinks added to the
pipeline's own), ``--record PATH`` (save the source's events as they arrive)
and ``--replay PATH [--realtime]`` (read them back instead of attaching: no
root, no bcc); ``-o ndjson`` writes results as NDJSON on standard output,
``--quiet`` leaves only results, ``--live`` redraws them in place.

``run`` and ``explain`` take ``-e EXPR``, a pipeline written as one
expression (:mod:`flowtrace.expression`), instead of a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anyio
import msgspec

from . import catalogue, command_start
from .doctor import as_json_objects, run_checks, summary
from .errors import (
    DEBUG_HINT,
    FlowtraceError,
    KernelUnreadable,
    PipelineDefinitionError,
    PipelineFileError,
    debugging,
    describe,
    one_line,
    raised_at,
)
from .expression import evaluate
from .loader import PipelineFile, load
from .output_mode import MODES, with_output
from .recorder import RecordingSource
from .replay import ReplayError, replay
from .runtime import DRAIN_TIMEOUT, Run
from .sinkspec import SinkSpecError, sink_from_spec, with_sinks
from .stages import Pipeline
from .visible import visible

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["UsageError", "main"]

_LIVE_INTERVAL = 1.0


class UsageError(PipelineFileError):
    """A command line that does not parse (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line (raised, not printed)."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}; see {self.prog} --help")


_LONGEST_ERROR = 4000


def _say(line: str) -> None:
    """``line`` on stderr after ``flowtrace:``, as one line whatever it holds
    (line ends joined with spaces, control characters shown as ``\\xNN``)."""
    print(f"flowtrace: {visible(' '.join(line.splitlines()))}", file=sys.stderr, flush=True)


def _error(exc: BaseException) -> None:
    """``exc`` as one ``flowtrace: error:`` line (line ends folded, control
    characters shown, never empty); with FLOWTRACE_DEBUG, its traceback first."""
    if debugging():
        traceback.print_exception(exc)
    _say(f"error: {one_line(str(exc), _LONGEST_ERROR) or describe(exc)}")


def _version() -> str:
    try:
        return version("flowtrace")
    except PackageNotFoundError:
        return "unknown (not installed)"


async def _watch_signals(run: Run, scope: anyio.CancelScope) -> None:
    """First Ctrl-C/SIGTERM/SIGHUP: graceful stop (probes detach at once, the
    drain has a deadline). Second: cancel (what was in flight is counted)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        stopping = False
        async for _ in signals:
            if stopping:
                scope.cancel()
                return
            stopping = True
            run.stop()


async def _report_losses(run: Run) -> None:
    """Print a line whenever a stage's loss or drop count grows."""
    shown = (0, 0)
    while True:
        await anyio.sleep(_LIVE_INTERVAL)
        now = (run.stats.lost, run.stats.dropped)
        if now != shown:
            _say(f"so far {now[0]} events lost in the kernel, {now[1]} dropped in the pipeline")
            shown = now


async def _run(run: Run, duration: float | None, report: Callable[[str], None] | None) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, run, tg.cancel_scope)
        if report is not None:
            tg.start_soon(_report_losses, run)
        try:
            await run.run(duration=duration, report=report)
        finally:
            tg.cancel_scope.cancel()


def _duration(text: str) -> float:
    """``--duration``: a finite, positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _latency(text: str) -> float:
    """``--latency``: seconds from 0 to 60."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 60")
    return seconds


def _check_record(pipeline: Pipeline, path: str) -> None:
    """Refuse ``--record PATH`` before anything runs: a source without an
    event type (its recording could not be replayed), a directory, or a
    path in no directory."""
    event = pipeline.source.event_type()
    if not (isinstance(event, type) and issubclass(event, msgspec.Struct)):
        raise ReplayError(
            f"--record: source {pipeline.source.stage_name()!r} declares no event type (its"
            " event_type() names no msgspec Struct), so its recording could not be"
            " replayed; record a source that declares one"
        )
    target = Path(path)
    if target.is_dir():
        raise ReplayError(f"--record {path}: is a directory; give a file path")
    folder = target.resolve().parent
    if not folder.is_dir():
        raise ReplayError(f"--record {path}: no directory {str(folder)!r}")


def _same_file(one: str, other: str) -> bool:
    """Whether the paths name one file (same device and inode: also through
    a hard link or a symlink); False when either does not exist."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


# -- the command line of run and explain -------------------------------------


def _pipeline_arguments(command: argparse.ArgumentParser, *, required: bool = False) -> None:
    command.add_argument(
        "pipeline",
        nargs=None if required else "?",
        help="FILE[:NAME] (NAME defaults to 'pipeline'), or a shipped pipeline's name"
        " (flowtrace list); or use -e",
    )
    command.add_argument(
        "-e",
        dest="expression",
        metavar="EXPR",
        help="the pipeline as one expression instead of a FILE (see docs/oneliners.md)",
    )
    command.add_argument(
        "--no-pushdown",
        action="store_true",
        help="run every operator in user space, none in the BPF program",
    )


def _run_options(run: argparse.ArgumentParser) -> None:
    """flowtrace's own options of ``run`` (accepted before or after the pipeline)."""
    run.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="stop this many seconds after the probes are attached (a positive number)",
    )
    run.add_argument(
        "--drain-timeout",
        type=_duration,
        default=DRAIN_TIMEOUT,
        metavar="SECONDS",
        help=f"after a stop, what is not delivered by then is cut off, counted"
        f" (default {DRAIN_TIMEOUT:g})",
    )
    run.add_argument(
        "--latency",
        type=_latency,
        metavar="SECONDS",
        help="longest a kernel source holds a record to gather a batch or put it in"
        " order (default: 0.01 to gather, 0.001 to order; 0: never)",
    )
    run.add_argument(
        "-o",
        "--output",
        choices=MODES,
        default="text",
        help="text: the pipeline's own output (default); ndjson: results as NDJSON records"
        " on stdout, diagnostics on stderr",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="results only: no headers, attach or summary"
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="redraw the latest results and counters in place (stdout must be a terminal)",
    )
    run.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="NAME:ARG",
        help="also write to this sink (ndjson:PATH, socket:tcp://HOST:PORT, metrics:PORT, ...)",
    )
    run.add_argument("--record", metavar="PATH", help="save the source's events to PATH")
    run.add_argument(
        "--replay", metavar="PATH", help="read the source's events from a recording (no root)"
    )
    run.add_argument(
        "--realtime", action="store_true", help="replay at recorded speed, not as fast as possible"
    )


def _explain_options(explain: argparse.ArgumentParser) -> None:
    """flowtrace's own options of ``explain``."""
    explain.add_argument(
        "--json", action="store_true", help="each stage with where it runs and why, as JSON"
    )


_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": _run_options,
    "explain": _explain_options,
}


def _command_parser(command: str, loaded: PipelineFile | None) -> _Parser:
    """The full parser of ``flowtrace run|explain PIPELINE``: flowtrace's
    options and the pipeline's own arguments."""
    prog = f"flowtrace {command}" + (f" {loaded.command_name}" if loaded else "")
    description = loaded.description if loaded else _SYNOPSIS
    parser = _Parser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _pipeline_arguments(parser, required=loaded is not None)
    _OPTIONS[command](parser)
    if loaded is not None:
        loaded.add_arguments(parser)
    return parser


def _parse_pipeline_command(
    command: str, argv: list[str], first: argparse.Namespace
) -> tuple[argparse.Namespace, PipelineFile | None]:
    """Load the pipeline ``first.pipeline`` names (if any), then parse the
    whole command line with its arguments and flowtrace's options mixed."""
    if first.expression is not None and first.pipeline is not None:
        raise PipelineFileError("give a pipeline FILE or -e EXPR, not both")
    loaded = load(first.pipeline) if first.pipeline is not None else None
    parser = _command_parser(command, loaded)
    if first.help:
        parser.print_help()
        raise SystemExit(0)
    args = parser.parse_intermixed_args(argv)
    if args.expression is None and args.pipeline is None:
        raise PipelineFileError("give a pipeline FILE or -e EXPR")
    return args, loaded


def _pipeline(args: argparse.Namespace, loaded: PipelineFile | None) -> Pipeline:
    if loaded is None:
        pipeline = evaluate(args.expression).replace(name="expression")
    else:
        pipeline = loaded.build_from(args)
    if getattr(args, "latency", None) is not None:
        pipeline = pipeline.replace(latency=args.latency)
    return pipeline.replace(pushdown=False) if args.no_pushdown else pipeline


def _build(args: argparse.Namespace, loaded: PipelineFile | None) -> Pipeline:
    """The pipeline to run: loaded, replayed or recorded, with the extra
    sinks and the output asked for. Every problem with the options raises
    here, before anything runs."""
    if args.live and args.output != "text":
        raise UsageError("--live draws its own view: leave out -o/--output")
    if args.live and not sys.stdout.isatty():
        raise UsageError(
            "--live needs a terminal on standard output; use -o text or -o ndjson to pipe"
        )
    pipeline = _pipeline(args, loaded)
    sinks = [sink_from_spec(spec) for spec in args.sink]
    if args.realtime and not args.replay:
        raise SinkSpecError("--realtime paces a replay: use it with --replay PATH")
    if args.record:
        _check_record(pipeline, args.record)
    if args.replay:
        if args.record and _same_file(args.record, args.replay):
            raise ReplayError(
                f"--record {args.record} is the recording being replayed ({args.replay}),"
                " and would overwrite it; record to another file"
            )
        pipeline = replay(pipeline, args.replay, realtime=args.realtime)
    if args.record:
        pipeline = pipeline.replace(source=RecordingSource(pipeline.source, args.record))
    if args.live:
        from .live import with_live_view  # imports rich only when asked for

        pipeline = with_live_view(pipeline)
    else:
        pipeline = with_output(pipeline, args.output, quiet=args.quiet)
    return with_sinks(pipeline, sinks)


def _cmd_run(args: argparse.Namespace, loaded: PipelineFile | None) -> int:
    run = Run(_build(args, loaded), drain_timeout=args.drain_timeout)
    quiet_while_running = args.quiet or args.live
    try:
        anyio.run(_run, run, args.duration, None if quiet_while_running else _say)
    except BaseExceptionGroup as group:
        failures, _ = group.split(FlowtraceError)
        if failures is None:
            raise
        first = _first_leaf(failures)
        if _reader_went_away(first):  # `| head` has what it wanted
            _quiet_stdout()
            return 0
        raise first from first.__cause__
    finally:
        if not args.quiet:
            for line in run.stats.summary():
                _say(line)
    return 0


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _cmd_explain(args: argparse.Namespace, loaded: PipelineFile | None) -> int:
    pipeline = _pipeline(args, loaded)
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in pipeline.places()], indent=2))
        return 0
    print("\n".join(pipeline.describe()))
    try:
        code = pipeline.placement().source.generated_code()
    except KernelUnreadable:
        return 0  # said in the description: the program depends on this kernel
    if code is not None:
        print("\n/* BPF program */")
        print(code)
    return 0


# -- the other commands -------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    shipped = catalogue.lessons()
    width = max((len(lesson.name) for lesson in shipped), default=0)
    for lesson in shipped:
        print(f"{lesson.name:<{width}}  {lesson.summary}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps(as_json_objects(checks), indent=2))
    else:
        print("\n".join([*(c.line() for c in checks), summary(checks)]))
    return 1 if any(c.status == "fail" for c in checks) else 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_command  # imports matplotlib only when asked for

    return plot_command(args)


_SYNOPSIS = """\
bcc tracing as composable async pipelines.

examples:
  flowtrace list                          the shipped pipelines
  flowtrace run vfsreadlat -m 1 3         a shipped pipeline with its arguments
  flowtrace run vfsreadlat --help         its arguments and flowtrace's options
  flowtrace run -o ndjson sys_sync | jq   results as NDJSON records
  flowtrace run --live vfsreadlat 1       redrawn in place
  flowtrace plot REC --heatmap out.svg    a latency heatmap
"""


def _parser() -> _Parser:
    parser = _Parser(
        prog="flowtrace",
        description=_SYNOPSIS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowtrace {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run", help="run a pipeline until Ctrl-C or its end", add_help=False
    )
    explain = commands.add_parser(
        "explain", help="print the attach plan and BPF program without attaching", add_help=False
    )
    for name, command in (("run", run), ("explain", explain)):
        _pipeline_arguments(command)
        _OPTIONS[name](command)
        command.add_argument("-h", "--help", action="store_true")
        command.add_argument("rest", nargs=argparse.REMAINDER)
    listing = commands.add_parser("list", help="list the shipped pipelines")
    listing.set_defaults(handler=_cmd_list)
    plot = commands.add_parser(
        "plot", help="draw a latency heatmap or histogram (SVG) from a recording or NDJSON"
    )
    _plot_options(plot)
    plot.set_defaults(handler=_cmd_plot)
    doctor = commands.add_parser("doctor", help="check this machine for tracing")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_cmd_doctor)
    return parser


def _plot_options(plot: argparse.ArgumentParser) -> None:
    plot.add_argument("input", metavar="REC", help="a recording (--record) or an NDJSON file")
    plot.add_argument("--heatmap", metavar="OUT.svg", help="draw a latency heatmap to this file")
    plot.add_argument("--histogram", metavar="OUT.svg", help="draw a histogram to this file")
    plot.add_argument(
        "--field", help="the event field to plot from a recording (default: a latency field)"
    )
    plot.add_argument(
        "--interval",
        type=_duration,
        default=1.0,
        metavar="SECONDS",
        help="heatmap column width for a recording (default 1)",
    )
    plot.add_argument(
        "--unit",
        choices=("nsecs", "usecs", "msecs"),
        default="usecs",
        help="unit of a recording's nanosecond field on the plot (default usecs)",
    )
    plot.add_argument("--title", help="the plot's title (default: from the input)")


_PIPELINE_COMMANDS = {"run": _cmd_run, "explain": _cmd_explain}


def _reader_went_away(exc: BaseException) -> bool:
    """Whether ``exc`` is standard output's reader closing it (``| head``)."""
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _quiet_stdout() -> None:
    """Point standard output at /dev/null: its reader is gone, and Python
    would otherwise complain while flushing it at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a reader of stdout going away (``| head``) ends it
    quietly with status 0, as it ends bcc tools and bpftrace. A Ctrl-C
    before a run watches for it (while starting, loading or building) ends
    it quietly with status 130. Every error is one line; one flowtrace did
    not mean to raise (a bug) names its type and where it was raised, and
    ``FLOWTRACE_DEBUG=1`` adds the traceback."""
    command_start.release()
    try:
        return _main(argv)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return command_start.INTERRUPTED
    except BaseExceptionGroup as group:  # what a task group let out
        if group.subgroup(KeyboardInterrupt) is not None:
            return command_start.INTERRUPTED
        if not isinstance(group, Exception):
            raise
        return _unexpected(group)
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    """Report an exception flowtrace did not raise on purpose; status 1."""
    leaf = _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
    if debugging():
        traceback.print_exception(exc)
    what = describe(leaf, _LONGEST_ERROR)
    if str(leaf) and (where := raised_at(leaf)):  # (describe names it without a message)
        what += f" (at {where})"
    _say(f"error: unexpected {what}; a bug in the pipeline, a plugin or flowtrace ({DEBUG_HINT})")
    return 1


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        first = _parser().parse_args(argv)
        if first.command in _PIPELINE_COMMANDS:
            rest = argv[argv.index(first.command) + 1 :]
            args, loaded = _parse_pipeline_command(first.command, rest, first)
            return _PIPELINE_COMMANDS[first.command](args, loaded)
        code: int = first.handler(first)
    except (PipelineFileError, PipelineDefinitionError, SinkSpecError, ReplayError) as exc:
        _error(exc)
        return 2
    except FlowtraceError as exc:
        if _reader_went_away(exc):
            _quiet_stdout()
            return 0
        _error(exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
