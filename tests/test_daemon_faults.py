"""Faults around the daemon: bad config, a full output disk, an unreadable input, `status` errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon_support import (PYTHON, DaemonRun, assert_processed_exactly_once, make_clip, small_tmpfs,
                                 write_config)


def _watch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "facedeblur", "watch", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.mark.parametrize("body, expected", [
    ("daemon:\n  inbox: [{inbox}]\n  stable_secondz: 3\n", r"line 3: daemon.stable_secondz: unknown key"),
    ("daemon:\n  inbox: [{inbox}]\n  workers: many\n", r"line 3: daemon.workers: Input should be a valid integer"),
    ("daemon:\n  inbox: [{inbox}/missing]\n  outbox: {root}/out\n  state: {root}/state\n",
     r"inbox .*missing does not exist or is not a folder; create it or fix daemon.inbox"),
    ("daemon:\n  inbox: [{inbox}]\n  after: move\n", r"after: move needs done_folder"),
    ("daemon:\n  inbox: [{inbox}]\n  outbox: {root}/out\n  state: {root}/state\n  after: move\n"
     "  done_folder: {inbox}/done\n", r"daemon.done_folder .*inbox/done is inside an inbox .*outside every inbox"),
    ("daemon:\n  inbox: [{inbox}]\n  outbox: {root}/out\n  state: {root}/state\n  failed_folder: {inbox}\n",
     r"daemon.failed_folder .*inbox is inside an inbox"),
])
def test_config_errors_exit_nonzero_with_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(body.format(inbox=inbox, root=tmp_path), encoding="utf-8")
    result = _watch("--config", str(config), cwd=tmp_path)
    # A missing inbox may be a share not mounted yet: 75 (EX_TEMPFAIL), which systemd restarts; else 2.
    assert result.returncode == (75 if "missing" in body else 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facedeblur: error: "), result.stderr
    import re
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "state").exists()        # nothing started


def test_missing_folders_on_the_command_line_and_status_without_journal(tmp_path: Path) -> None:
    result = _watch("--inbox", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no outbox folder: pass --outbox DIR" in result.stderr
    result = _watch("--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"), "--state",
                    str(tmp_path / "st"), cwd=tmp_path)
    assert result.returncode == 75 and "does not exist" in result.stderr
    status = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--json", "--state", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and "no journal in" in status.stderr


@pytest.fixture
def tiny_outbox(tmp_path: Path):
    """An outbox on its own 4 MiB tmpfs, so "disk full" is real ENOSPC from the kernel."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs for a real full disk")
    with small_tmpfs(tmp_path / "outbox", "4m") as mount_point:
        yield mount_point


@pytest.mark.slow
def test_full_output_disk_fails_cleanly_and_retries_until_space_returns(tmp_path: Path, tiny_outbox: Path) -> None:
    run = DaemonRun(tmp_path, max_attempts=2)
    (run.outbox / "failed").mkdir()
    filler = run.outbox / "filler.bin"
    with open(filler, "wb") as handle:      # fill the disk to the last block
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    run.start()
    make_clip(run.inbox / "clip.mp4", face=False, seed=5)
    # Fails more often than max_attempts allows, yet is never given up on: the disk, not the clip, is at fault.
    run.wait_for(lambda: (log := run.log()).count("event=job_retry") >= 3, 90, "several failed runs")
    job = run.jobs()[0]
    assert job["state"] in ("queued", "running") and job["attempts"] <= 1, job
    assert "retried" in job["error"] and ("No space" in job["error"] or "disk full" in job["error"]), job["error"]
    assert "counted=False" in run.log()
    assert run.published() == []                                    # nothing half-written published
    assert not any(p for p in (run.outbox / "failed").iterdir())
    filler.unlink()                                                 # space is back
    run.wait_for(lambda: run.settled(1), 90, "the job to succeed once there is space")
    assert_processed_exactly_once(run, ["clip.mp4"])
    assert run.stop() == 0


@pytest.mark.slow
def test_unreadable_input_goes_to_failed_with_its_reason(tmp_path: Path) -> None:
    """chmod 000 means nothing to root (CAP_DAC_OVERRIDE), so as root the daemon runs without the two
    capabilities that bypass file permissions, exactly as the unprivileged service user would."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE: "
                        "chmod 000 would not make the file unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")
    run = DaemonRun(tmp_path)
    make_clip(run.inbox / "ok.mp4", face=False, seed=6)
    locked = make_clip(run.inbox / "locked.mp4", face=False, seed=7)
    os.chmod(locked, 0)
    run.start(prefix=prefix)
    run.wait_for(lambda: run.settled(2), 120, "both inputs to settle")
    jobs = {j["rel_path"]: j for j in run.jobs()}
    assert jobs["ok.mp4"]["state"] == "done"
    failed = jobs["locked.mp4"]
    assert failed["state"] == "failed" and "not readable" in failed["error"] and "permission" in failed["error"]
    notes = list((run.outbox / "failed").glob("*.error.txt"))
    assert len(notes) == 1 and "fix its permissions" in notes[0].read_text(encoding="utf-8")
    assert locked.exists()                                       # never removed
    status = json.loads(subprocess.run([PYTHON, "-m", "facedeblur", "status", "--json", "--state",
                                        str(run.state)], capture_output=True, text=True, timeout=60).stdout)
    assert status["counts"]["failed"] == 1 and status["counts"]["done"] == 1
    assert run.stop() == 0


def test_repo_config_documents_every_daemon_key() -> None:
    from facedeblur.config import DaemonSettings, load_config
    repo_config = Path(__file__).resolve().parents[1] / "config.yaml"
    daemon = load_config(repo_config).daemon
    text = repo_config.read_text(encoding="utf-8").split("\ndaemon:", 1)[1]
    for key in DaemonSettings.model_fields:
        line = next((l for l in text.splitlines() if l.strip().startswith(f"{key}:")), None)
        assert line is not None and "#" in line, f"daemon.{key} missing or uncommented in config.yaml"
    defaults = DaemonSettings().model_dump(exclude={"inbox", "outbox", "state"})
    assert daemon.model_dump(exclude={"inbox", "outbox", "state"}) == defaults


def test_failed_copies_keep_holes_and_stop_at_the_size_cap(tmp_path: Path) -> None:
    """Two sparse 'videos' that are not videos: one below failed_copy_max_mb is copied with its holes, one above is
    not copied at all; its note keeps the SHA-256 and says why, and the input stays in the inbox."""
    import hashlib
    run = DaemonRun(tmp_path, failed_copy_max_mb=64, max_attempts=1)
    for name, size in (("small.mp4", 48 << 20), ("large.mp4", 96 << 20)):
        with open(run.inbox / name, "wb") as sparse:
            sparse.write(b"not a video, then a hole")
            sparse.truncate(size)
    run.start()
    run.wait_for(lambda: run.settled(2), 120, "both inputs to fail")
    jobs = {j["rel_path"]: j for j in run.jobs()}
    assert all(j["state"] == "failed" for j in jobs.values()), jobs
    small = run.outbox / "failed" / f"small.mp4-j{jobs['small.mp4']['id']}.mp4"
    assert small.stat().st_size == 48 << 20 and small.stat().st_blocks * 512 < 1 << 20   # still sparse
    assert small.read_bytes()[:24] == b"not a video, then a hole"
    large_id = jobs["large.mp4"]["id"]
    assert not (run.outbox / "failed" / f"large.mp4-j{large_id}.mp4").exists()
    note = (run.outbox / "failed" / f"large.mp4-j{large_id}.mp4.error.txt").read_text(encoding="utf-8")
    with open(run.inbox / "large.mp4", "rb") as large:
        digest = hashlib.file_digest(large, "sha256").hexdigest()
    assert f"sha256: {digest}" in note and "above daemon.failed_copy_max_mb (64 MB)" in note
    assert jobs["large.mp4"]["failed_copy"] is None and (run.inbox / "large.mp4").stat().st_size == 96 << 20
    assert run.stop() == 0
