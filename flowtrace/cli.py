"""The ``flowtrace`` command: run, explain, doctor.

``run`` also takes ``--sink NAME:ARG`` (repeatable; sinks added to the
pipeline's own), ``--record PATH`` (save the source's events as they arrive)
and ``--replay PATH [--realtime]`` (read them back instead of attaching: no
root, no bcc). Options go before the pipeline file.

``run`` and ``explain`` take ``-e EXPR``, a pipeline written as one
expression (:mod:`flowtrace.expression`), instead of a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from .doctor import as_json_objects, run_checks
from .errors import FlowtraceError, PipelineDefinitionError, PipelineFileError
from .expression import evaluate
from .loader import load_pipeline
from .recorder import RecordingSource
from .replay import ReplayError, replay
from .runtime import Run
from .sinkspec import SinkSpecError, sink_from_spec, with_sinks
from .stages import Pipeline

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]

_LIVE_INTERVAL = 1.0


def _say(line: str) -> None:
    print(f"flowtrace: {line}", file=sys.stderr, flush=True)


async def _watch_signals(run: Run, scope: anyio.CancelScope) -> None:
    """First Ctrl-C/SIGTERM: graceful stop. Second: cancel (probes still detach)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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


async def _run(run: Run, duration: float | None) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, run, tg.cancel_scope)
        tg.start_soon(_report_losses, run)
        try:
            await run.run(duration=duration, report=_say)
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


def _load(args: argparse.Namespace) -> Pipeline:
    """The pipeline of ``-e EXPR`` or of ``FILE [ARGS]``: exactly one of them."""
    if (args.expression is None) == (args.pipeline is None):
        both = args.pipeline is not None
        raise PipelineFileError(f"give a pipeline FILE or -e EXPR{', not both' if both else ''}")
    pipeline = evaluate(args.expression) if args.expression is not None else None
    pipeline = pipeline or load_pipeline(args.pipeline, args.args)
    return pipeline.replace(pushdown=False) if args.no_pushdown else pipeline


def _build(args: argparse.Namespace) -> Pipeline:
    """The pipeline to run: loaded, replayed or recorded, with the extra sinks.
    Every problem with the options raises here, before anything runs."""
    pipeline = _load(args)
    sinks = [sink_from_spec(spec) for spec in args.sink]
    if args.realtime and not args.replay:
        raise SinkSpecError("--realtime paces a replay: use it with --replay PATH")
    if args.record:
        _check_record(pipeline, args.record)
    if args.replay:
        if args.record and Path(args.record).resolve() == Path(args.replay).resolve():
            raise ReplayError(
                f"--record {args.record} would overwrite the recording being replayed"
            )
        pipeline = replay(pipeline, args.replay, realtime=args.realtime)
    if args.record:
        pipeline = pipeline.replace(source=RecordingSource(pipeline.source, args.record))
    return with_sinks(pipeline, sinks)


def _cmd_run(args: argparse.Namespace) -> int:
    run = Run(_build(args))
    try:
        anyio.run(_run, run, args.duration)
    except BaseExceptionGroup as group:
        failures, _ = group.split(FlowtraceError)
        if failures is None:
            raise
        raise _first_leaf(failures) from None
    finally:
        for line in run.stats.summary():
            _say(line)
    return 0


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _cmd_explain(args: argparse.Namespace) -> int:
    pipeline = _load(args)
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in pipeline.places()], indent=2))
        return 0
    print("\n".join(pipeline.describe()))
    code = pipeline.placement().source.generated_code()
    if code is not None:
        print("\n/* BPF program */")
        print(code)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps(as_json_objects(checks), indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def _pipeline_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "pipeline", nargs="?", help="FILE[:NAME], NAME defaults to 'pipeline' (or use -e)"
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a pipeline file until Ctrl-C or its end")
    _pipeline_arguments(run)
    run.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="stop after this many seconds (a positive number)",
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
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the pipeline")
    run.set_defaults(handler=_cmd_run)
    explain = commands.add_parser(
        "explain", help="print the attach plan and BPF program without attaching"
    )
    _pipeline_arguments(explain)
    explain.add_argument(
        "--json", action="store_true", help="each stage with where it runs and why, as JSON"
    )
    explain.add_argument("args", nargs=argparse.REMAINDER)
    explain.set_defaults(handler=_cmd_explain)
    doctor = commands.add_parser("doctor", help="check this machine for tracing")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (PipelineFileError, PipelineDefinitionError, SinkSpecError, ReplayError) as exc:
        _say(f"error: {exc}")
        return 2
    except FlowtraceError as exc:
        _say(f"error: {exc}")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
