"""Output files are opened as root's tools should: no symlink followed at the
last component, new files 0644 (recordings 0600), a stranger's file refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flowtrace.linefile import open_output

NOBODY = 65534


def test_a_new_output_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    for mode in (0o644, 0o600):
        path = tmp_path / f"out{mode:o}"
        os.close(open_output(path, mode))
        assert stat.S_IMODE(path.stat().st_mode) == mode & ~_umask()


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    link = tmp_path / "out.ndjson"
    link.symlink_to(precious)
    with pytest.raises(OSError):
        open_output(link, 0o644)
    assert precious.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_a_file_of_another_user_is_refused_untouched(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.ndjson"
    theirs.write_text("their data\n")
    os.chown(theirs, NOBODY, NOBODY)
    theirs.chmod(0o666)
    with pytest.raises(PermissionError, match=f"belongs to another user \\(uid {NOBODY}\\)"):
        open_output(theirs, 0o644)
    assert theirs.read_text() == "their data\n"


def test_an_existing_file_of_ours_is_truncated(tmp_path: Path) -> None:
    ours = tmp_path / "ours.ndjson"
    ours.write_text("old\n")
    os.close(open_output(ours, 0o644))
    assert ours.read_text() == ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
