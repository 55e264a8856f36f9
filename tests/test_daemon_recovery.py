"""Crashes and signals on a real daemon: kill -9 mid-job, SIGTERM (abandon and finish), SIGHUP reload."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from daemon_support import DaemonRun, assert_processed_exactly_once, make_clip, write_config

pytestmark = pytest.mark.slow   # a real daemon

LONG_FRAMES = 120  # a face clip that takes several seconds to process, even with a fast model: time to interrupt it


def _running_job(run: DaemonRun) -> dict | None:
    return next((j for j in run.jobs() if j["state"] == "running"), None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); /proc tells the truth.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_kill9_mid_job_then_restart_completes_it_exactly_once(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path, shutdown_timeout=1.0).start()
    make_clip(run.inbox / "long.mp4", frames=LONG_FRAMES, face=True, seed=1)
    run.wait_for(lambda: _running_job(run) is not None, 60, "the job to start")
    worker_pid = _running_job(run)["worker_pid"]
    time.sleep(0.5)
    run.kill9()
    # The worker dies with the daemon (PR_SET_PDEATHSIG): no orphan can publish behind the next daemon's back.
    deadline = time.monotonic() + 10
    while _pid_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pid_alive(worker_pid)
    assert run.published() == []                       # nothing half-written was published
    assert [j["state"] for j in run.jobs()] == ["running"]

    run.start()
    run.wait_for(lambda: run.settled(1), 120, "the interrupted job to finish")
    assert_processed_exactly_once(run, ["long.mp4"])
    job = run.jobs()[0]
    assert (job["attempts"], job["interruptions"]) == (1, 1)   # the crash is not held against the input
    assert "event=job_requeued" in run.log()

    # SIGTERM during a job with a 1 s shutdown timeout: the job is abandoned cleanly, exit status 0.
    make_clip(run.inbox / "long2.mp4", frames=LONG_FRAMES, face=True, seed=2)
    run.wait_for(lambda: _running_job(run) is not None, 60, "the second job to start")
    time.sleep(1.0)
    assert run.stop() == 0
    second = [j for j in run.jobs() if j["rel_path"] == "long2.mp4"][0]
    assert (second["state"], second["interruptions"]) == ("queued", 1)
    assert [p.name for p in run.published()] == [Path(job["output"]).name]
    assert not (run.outbox / ".staging").exists()
    assert "event=job_abandoned" in run.log()

    run.start()
    run.wait_for(lambda: run.settled(2), 120, "the abandoned job to finish after restart")
    assert_processed_exactly_once(run, ["long.mp4", "long2.mp4"])
    assert run.stop() == 0


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sighup_reloads_config_and_sigterm_lets_the_running_job_finish(tmp_path: Path) -> None:
    port = _free_port()
    run = DaemonRun(tmp_path, include=["*.mp4"], shutdown_timeout=1.0, metrics_port=port).start()
    make_clip(run.inbox / "later.mov", face=False, seed=3)
    time.sleep(5)    # longer than stable_seconds + one rescan: .mov is not an input yet
    assert run.jobs() == []

    # A broken config on reload is reported and the running one kept.
    run.config.write_text("daemon:\n  stable_secondz: 1\n", encoding="utf-8")
    run.process.send_signal(signal.SIGHUP)
    run.wait_for(lambda: "event=reload_failed" in run.log(), 30, "the bad reload to be reported")
    assert "stable_secondz" in run.log()
    # A done folder inside the inbox (after: move would nest done/done/... without end) is refused the same way.
    write_config(run.config, inbox=[str(run.inbox)], outbox=str(run.outbox), state=str(run.state),
                 **{**run.settings, "after": "move", "done_folder": str(run.inbox / "done")})
    run.process.send_signal(signal.SIGHUP)
    run.wait_for(lambda: run.log().count("event=reload_failed") == 2, 30, "the second bad reload to be reported")
    assert "daemon.done_folder" in run.log() and "is inside an inbox" in run.log()

    write_config(run.config, inbox=[str(run.inbox)], outbox=str(run.outbox), state=str(run.state),
                 **{**run.settings, "include": ["*.mp4", "*.mov"], "shutdown_timeout": 120.0})
    run.process.send_signal(signal.SIGHUP)
    run.wait_for(lambda: "event=reloaded" in run.log(), 30, "the reload")
    run.wait_for(lambda: run.settled(1), 60, "the .mov to be taken after the reload")
    assert_processed_exactly_once(run, ["later.mov"])
    import urllib.request
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "facedeblur_jobs_done_total 1.0" in metrics and "facedeblur_frames_total 10.0" in metrics
    assert "facedeblur_model_load_seconds" in metrics and "facedeblur_job_seconds_count 1.0" in metrics

    make_clip(run.inbox / "finish_me.mp4", frames=LONG_FRAMES, face=True, seed=4)
    run.wait_for(lambda: _running_job(run) is not None, 60, "the job to start")
    assert run.stop(timeout=180) == 0     # shutdown_timeout is 120 s: it waits for the job
    assert_processed_exactly_once(run, ["later.mov", "finish_me.mp4"])
