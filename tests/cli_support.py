"""Shared check for the commands' error contract: one line on stderr, no traceback, non-zero exit."""
from __future__ import annotations

import subprocess


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert the command failed with exactly one 'facedeblur: error:' line holding every needle; return it."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("facedeblur: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
