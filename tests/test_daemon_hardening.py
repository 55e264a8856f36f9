"""Hostile inputs and broken surroundings (names, symlinks, permanent errors, journal failures).

Each test drives the real thing: a real `facedeblur watch` or `facedeblur process` process, real files,
the real SQLite journal. The hostile-input table in docs/RELIABILITY.md lists what each one shows.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from daemon_support import PYTHON, DaemonRun, make_clip, small_tmpfs

from facedeblur.daemon.journal import Journal
from facedeblur.pipeline.restore import PACKAGED_MODELS, packaged_models_dir

NON_UTF8 = b"caf\xe9.mp4"


def _write_at(folder: Path, name: bytes, data: bytes) -> Path:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as handle:
        handle.write(data)
    return Path(os.fsdecode(path))


def _job_states(run: DaemonRun) -> list[str]:
    return [j["state"] for j in run.jobs()]


def test_journal_keeps_a_non_utf8_path_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    path = os.fsdecode(os.path.join(os.fsencode(tmp_path), NON_UTF8))
    job_id = journal.add(path=path, inbox=str(tmp_path), rel_path=os.fsdecode(NON_UTF8), kind="file", size=3,
                         mtime_ns=7, sha256=None)
    journal.mark_failed(job_id, f"{path}: not a video", path)
    journal.close()
    journal = Journal(tmp_path)
    assert journal.known(path, 3, 7)
    job = journal.get(job_id)
    assert os.fsencode(job.path) == os.fsencode(path) and os.fsencode(job.rel_path) == NON_UTF8
    assert "caf\\xe9.mp4" in job.error
    journal.close()


@pytest.mark.slow
def test_non_utf8_file_name_is_processed_by_the_daemon_and_by_process(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=4).read_bytes()
    run = DaemonRun(tmp_path / "d").start()
    try:
        _write_at(run.inbox, NON_UTF8, clip)
        run.wait_for(lambda: _job_states(run) == ["done"], 180, "the non-UTF-8 clip to be done")
        # A name with CR and ESC (a terminal escape) is processed too, and never reaches the log raw.
        _write_at(run.inbox, b"evil\r\x1b[2Jname.mp4", make_clip(tmp_path / "clip2.mp4", frames=4, seed=2).read_bytes())
        run.wait_for(lambda: _job_states(run) == ["done", "done"], 180, "the CR/ESC clip to be done")
        assert run.process.poll() is None, run.log()[-2000:]
        status = run.status()
        assert status["counts"]["done"] == 2
        raw_log = run.log_path.read_bytes()
        assert b"\r" not in raw_log and b"\x1b" not in raw_log and b"\xe9" not in raw_log
        assert "event=job_done" in run.log() and "caf\\xe9.mp4" in run.log() and "evil\\r\\x1b[2Jname" in run.log()
        manifest = [m for m in run.manifests() if m["daemon"]["input"].startswith("caf")][0]
        assert manifest["daemon"]["input"] == "caf\\xe9.mp4"
        # The worker reads the clip through the file it opened (O_NOFOLLOW); the manifest names the real input.
        assert manifest["input"]["path"] == str(run.inbox / "caf\\xe9.mp4"), manifest["input"]
        assert run.stop() == 0
        # A restart recognises the stored path (no second job) and becomes ready (the log is appended to: wait
        # for this run's own ready line, else SIGTERM can arrive before the new daemon handles it).
        run.start(wait_ready=False)
        run.wait_for(lambda: run.log().count("event=ready") == 2, 120, "the restarted daemon to become ready")
        time.sleep(4)
        assert _job_states(run) == ["done", "done"]
        assert run.stop() == 0
    finally:
        run.stop()
    # `process` on the same name: exit 0 and a readable manifest.
    source = _write_at(tmp_path, NON_UTF8, clip)
    out = tmp_path / "processed"
    result = subprocess.run([PYTHON, "-m", "facedeblur", "process", str(source), "-o", str(out), "--no-progress"],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["input"]["path"].endswith("caf\\xe9.mp4")
    (out / "index.html").read_text(encoding="utf-8")


def _png(path: Path, value: int = 0, size: int = 96) -> Path:
    import cv2
    import numpy as np
    from daemon_support import _face_image
    image = _face_image(size, size) if value == 0 else np.full((size, size, 3), value, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.slow
def test_symlinks_are_never_read_inside_a_frame_folder_or_after_a_swap(tmp_path: Path) -> None:
    secret_png = _png(tmp_path / "secret" / "secret.png", value=77)
    secret_clip = make_clip(tmp_path / "secret" / "secret.mp4", frames=4, seed=3)
    run = DaemonRun(tmp_path / "d").start()
    try:
        # A frame folder with one real frame and one link to a file outside the inbox, moved in at once.
        staged = tmp_path / "staged-frames"
        _png(staged / "001.png")
        os.symlink(secret_png, staged / "002.png")
        os.rename(staged, run.inbox / "frames")
        run.wait_for(lambda: _job_states(run) == ["failed"], 120, "the frame folder with a link to fail")
        job = run.jobs()[0]
        assert job["attempts"] == 1 and "symbolic link" in job["error"], job
        copy = Path(job["failed_copy"])
        assert sorted(p.name for p in copy.iterdir()) == ["001.png"]      # the link is neither followed nor copied
        assert run.published() == []
        # A regular clip swapped for a link before it is stable is never hashed or processed.
        (run.inbox / "swap.mp4").write_bytes(make_clip(tmp_path / "real.mp4", frames=4).read_bytes())
        os.symlink(secret_clip, run.inbox / ".swap-link")
        os.replace(run.inbox / ".swap-link", run.inbox / "swap.mp4")
        time.sleep(6)
        assert len(run.jobs()) == 1 and run.published() == [], run.jobs()
        assert run.process.poll() is None
        assert run.stop() == 0
    finally:
        run.stop()


@pytest.mark.slow
def test_permanent_input_errors_fail_at_once_and_a_hung_job_times_out_and_retries(tmp_path: Path) -> None:
    # retry_seconds is long: a permanent error that were retried would still be queued at the end. The
    # timeout is generous here: on a loaded machine even a failing decode must not be cut short by it.
    run = DaemonRun(tmp_path / "d", retry_seconds=2.0, max_attempts=2, job_timeout=120.0)
    run.start()
    try:
        bad = {"text.mp4": b"this is a text file, not a video\n" * 50, "empty.mp4": b"",
               "noise.png": os.urandom(5000)}
        for name, data in bad.items():
            (run.inbox / name).write_bytes(data)
        _write_at(run.inbox, b"bad\xff.mp4", b"\0garbage" * 300)    # and a name that is not UTF-8
        run.wait_for(lambda: len(run.jobs()) == 4 and _job_states(run) == ["failed"] * 4, 60,
                     "the four unusable inputs to fail")
        failures = run.status()["recent_failures"]
        assert any(f["input"] == "inbox/bad\\xff.mp4" and "not a readable video" in f["error"] for f in failures), failures
        for job in run.jobs():
            assert job["attempts"] == 1, job
            assert (run.outbox / "failed" / (Path(job["failed_copy"]).name + ".error.txt")).is_file()
        assert "event=job_retry" not in run.log()
        assert run.stop() == 0
    finally:
        run.stop()
    run = DaemonRun(tmp_path / "timeout", retry_seconds=2.0, max_attempts=2, job_timeout=0.3)
    run.start()
    try:
        # A clip that takes longer than job_timeout: its worker is stopped, the job retried, then failed.
        make_clip(run.inbox / "long.mp4", frames=40, width=320, height=240, seed=11)
        run.wait_for(lambda: len(run.jobs()) == 1 and run.jobs()[0]["state"] == "failed", 120,
                     "the slow clip to time out twice")
        job = run.jobs()[0]
        assert job["attempts"] == 2 and "timed out" in job["error"] and "job_timeout" in job["error"], job
        assert run.log().count("event=job_timeout") == 2 and "event=job_retry" in run.log()
        assert run.process.poll() is None and run.published() == []
        assert run.stop() == 0
    finally:
        run.stop()


@pytest.mark.slow
def test_a_damaged_journal_stops_with_one_line_and_status_says_the_same(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path / "d")
    (run.state / "journal.sqlite3").write_bytes(b"this is not a database, a disk error wrote over it\n" * 200)
    run.start(wait_ready=False)
    assert run.process.wait(timeout=120) == 2          # RestartPreventExitStatus=2: no restart loop
    log = run.log()
    assert "Traceback" not in log
    line = [l for l in log.splitlines() if l.startswith("facedeblur: error:")]
    assert len(line) == 1 and "damaged" in line[0] and "backup" in line[0] and ".recover" in line[0], log
    status = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--state", str(run.state)], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert status.stderr.strip().splitlines() == [line[0]]


@pytest.fixture()
def tiny_state(tmp_path: Path):
    # DaemonRun(tmp_path / "d") keeps its journal here
    with small_tmpfs(tmp_path / "d" / "state", "2m") as mount_point:
        yield mount_point


@pytest.mark.slow
def test_a_full_state_disk_pauses_intake_and_recovers(tmp_path: Path, tiny_state: Path) -> None:
    run = DaemonRun(tmp_path / "d")
    assert run.state == tiny_state
    run.start()
    try:
        filler = tiny_state / "filler.bin"
        try:
            with open(filler, "wb", buffering=0) as handle:      # fill the state disk to the last block
                while True:
                    handle.write(b"\0" * 4096)
        except OSError:
            pass
        make_clip(run.inbox / "clip.mp4", frames=4)
        run.wait_for(lambda: "event=journal_unwritable" in run.log(), 60, "the journal write to fail")
        time.sleep(3)
        assert run.process.poll() is None                 # paused, not crashed
        filler.unlink()                                   # space is back
        run.wait_for(lambda: "event=journal_writable" in run.log(), 60, "the journal to be writable again")
        run.wait_for(lambda: _job_states(run) == ["done"], 120, "the clip to be processed after the pause")
        assert len(run.published()) == 1
        assert run.stop() == 0
    finally:
        run.stop()


@pytest.mark.slow
def test_a_reload_naming_a_bad_model_keeps_the_running_config(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path / "d")
    base = run.config.read_text(encoding="utf-8")
    run.start()
    try:
        garbage = tmp_path / "garbage.onnx"
        garbage.write_bytes(b"not an onnx model" * 100)
        cases = [(tmp_path / "missing.onnx", "not found"), (garbage, "could not be loaded")]
        if not (packaged_models_dir() / PACKAGED_MODELS["quality"]).exists():  # until a GPU session ships it
            cases.append(("quality", "not in this facedeblur package"))
        for model, needle in cases:
            run.config.write_text(base + f"pipeline:\n  restorer:\n    model: {json.dumps(str(model))}\n",
                                  encoding="utf-8")
            before = run.log().count("event=reload_failed")
            run.process.send_signal(1)   # SIGHUP
            run.wait_for(lambda: run.log().count("event=reload_failed") == before + 1, 120, "the reload to fail")
            line = run.log().splitlines()[-1] if "reload_failed" in run.log().splitlines()[-1] else \
                [l for l in run.log().splitlines() if "event=reload_failed" in l][-1]
            assert needle in line and "kept the running configuration" in line, line
        time.sleep(3)
        assert "event=model_load_failed" not in run.log()       # no bad worker respawned in a loop
        assert "event=reloaded" not in run.log()
        make_clip(run.inbox / "clip.mp4", frames=4)
        run.wait_for(lambda: _job_states(run) == ["done"], 120, "a clip to be processed with the old config")
        assert run.stop() == 0
    finally:
        run.stop()
