"""``flowtrace run --live`` in a real terminal: tmux runs it, capture-pane
shows the histogram and the counters redrawn in place, Ctrl-C ends it
cleanly with the summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from clirun import FLOWTRACE

pytestmark = pytest.mark.kernel

HISTOGRAM_TITLE = "     usecs               : count     distribution"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def capture(session: str) -> list[str]:
    return tmux("capture-pane", "-p", "-t", session).splitlines()


def reads_in(screen: list[str]) -> int:
    row = next(line for line in screen if line.startswith("reads "))
    return int(row.split()[1])


def wait_for(session: str, text: str, seconds: float = 30) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = capture(session)
        if any(text in line for line in screen):
            return screen
        time.sleep(0.2)  # poll interval of this bounded wait
    raise AssertionError(f"{text!r} never appeared:\n" + "\n".join(capture(session)))


def test_live_view_redraws_histogram_and_counters_in_place(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is needed (scripts/setup.sh --test installs it)"
    session = f"flowtrace-{uuid.uuid4().hex[:8]}"
    pythonpath = os.environ.get("PYTHONPATH", "")
    command = (
        f"cd {tmp_path} && PYTHONPATH={pythonpath} {FLOWTRACE} run --live vfsreadlat 1;"
        " echo EXIT=$?; sleep 60"
    )
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "60", command)
    try:
        first = wait_for(session, HISTOGRAM_TITLE)
        assert first[0].startswith("flowtrace vfsreadlat ")
        assert first[1].split() == ["STAGE", "IN", "OUT", "LOST", "DROPPED", "LATE"]
        heading = next(line for line in first if line.startswith("lat_ns (usecs)"))
        assert re.fullmatch(r"lat_ns \(usecs\)   \d\d:\d\d:\d\d - \d\d:\d\d:\d\d", heading)
        deadline = time.monotonic() + 30
        second = capture(session)
        while reads_in(second) <= reads_in(first) or heading in second:
            assert time.monotonic() < deadline, "the view never redrew"
            time.sleep(0.2)  # poll interval of this bounded wait
            second = capture(session)
        assert second[0].startswith("flowtrace vfsreadlat ")  # redrawn in place, not scrolled
        assert reads_in(second) > reads_in(first)  # the counters move
        later = next(line for line in second if line.startswith("lat_ns (usecs)"))
        assert later != heading  # a newer interval's histogram
        assert any(line == HISTOGRAM_TITLE for line in second)
        tmux("send-keys", "-t", session, "C-c")
        done = wait_for(session, "EXIT=")
        assert "EXIT=0" in done
        assert any(line.startswith("flowtrace: reads: ") and " in, " in line for line in done)
        assert not any("Traceback" in line for line in done)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
