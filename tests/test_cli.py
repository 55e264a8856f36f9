"""The `facedeblur` command as a new user meets it: pipes, and an install section that names every extra."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from facedeblur.daemon.journal import Journal

REPO = Path(__file__).resolve().parents[1]


def test_status_into_a_reader_that_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`facedeblur status | head`: the reader may close the pipe before status has written; no traceback."""
    journal = Journal(tmp_path)
    for i in range(40):
        journal.add(path=f"/in/clip{i:02d}.mp4", inbox="/in", rel_path=f"clip{i:02d}.mp4", kind="file", size=1,
                    mtime_ns=i, sha256=None)
    journal.close()
    for extra in ([], ["--json"]):
        reader_side, writer_side = os.pipe()
        os.close(reader_side)                                        # the reader is gone before status writes
        try:
            result = subprocess.run([sys.executable, "-m", "facedeblur", "status", "--state", str(tmp_path), *extra],
                                    stdout=writer_side, stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(writer_side)
        assert result.stderr == "", result.stderr
        assert result.returncode == 141                              # as for a program ended by SIGPIPE
    shown = subprocess.run([sys.executable, "-m", "facedeblur", "status", "--state", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "queued 40" in shown.stdout, shown.stderr    # an open pipe is unaffected


def test_the_install_section_names_every_extra_and_how_to_keep_the_checkout_editable() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    for extra in extras:
        if extra != "dev":                                           # the test extra: ./scripts/test installs it
            assert f"./scripts/setup-venv {extra}" in install or f"`{extra}`" in install, extra
    assert "./scripts/setup-venv eval" in install and "evaluate" in install
    assert "pip install -e '.[cpu,serve]'" in install
