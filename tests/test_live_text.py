"""The live view's frame drawn without a terminal (rich writing to a
string): strings from events, stage names and results show their control
characters as text, as the console sink's lines do."""

from __future__ import annotations

import msgspec
import pytest

from flowtrace.live import LiveView
from flowtrace.operators import count
from flowtrace.sinks.console import ConsoleSink
from flowtrace.testing import ListSource

HOSTILE = "\x1b]0;PWN\x07\x1b[2J\x9b"
SHOWN = "\\x1b]0;PWN\\x07\\x1b[2J\\x9b"


class Task(msgspec.Struct, frozen=True):
    comm: str


@pytest.mark.anyio
async def test_event_lines_show_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    view = LiveView(ConsoleSink[Task](line=lambda e: f"comm={e.comm}"))
    await (ListSource([Task(HOSTILE), Task("plain")]) | view).run()
    frame = capsys.readouterr().out  # not a terminal: rich draws the last frame once
    assert f"comm={SHOWN}" in frame.splitlines()
    assert "comm=plain" in frame.splitlines()
    assert "\x1b" not in frame and "\x9b" not in frame


@pytest.mark.anyio
async def test_count_keys_and_stage_names_show_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = ListSource([Task(HOSTILE), Task(HOSTILE), Task("sh")], name=HOSTILE)
    await (source | count("comm") | LiveView(ConsoleSink())).run()
    frame = capsys.readouterr().out
    lines = [line.split() for line in frame.splitlines()]
    assert [SHOWN, "3", "3", "0", "0", "0"] in lines  # the source's counters row
    assert [SHOWN, "2"] in lines and ["sh", "1"] in lines  # the count table
    assert "\x1b" not in frame and "\x9b" not in frame
