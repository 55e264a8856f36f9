"""Progress of a running job and whether the daemon is alive, as an operator sees them: a real daemon processing
a real clip, read through the real `facedeblur status` (text and --json) and its Prometheus metrics."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from daemon_support import PYTHON, DaemonRun, make_clip
from facedeblur.daemon.journal import JournalReader
from facedeblur.daemon.messages import JobProgress
from facedeblur.daemon.progress import HEARTBEAT_FILE, daemon_liveness, job_fraction

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status_text(run: DaemonRun) -> str:
    out = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--state", str(run.state)], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout


def test_status_and_metrics_show_frames_stage_and_eta_while_a_job_runs_and_liveness_after(tmp_path: Path) -> None:
    port = _free_port()
    run = DaemonRun(tmp_path, metrics_port=port).start()
    try:
        assert run.status()["daemon"]["running"] is True
        assert run.status()["daemon"]["pid"] == run.process.pid
        # Long enough (on two shared cores) that the worker reports several times while it runs.
        clip = make_clip(tmp_path / "long.mp4", frames=120, width=320, height=240)
        (run.inbox / "cam2").mkdir()
        clip.rename(run.inbox / "cam2" / "long.mp4")   # whole at once: one job
        seen: list[dict] = []
        metrics_seen: list[str] = []

        def reported() -> bool:
            running = run.status()["running_jobs"]
            progress = [job["progress"] for job in running if job.get("progress")]
            seen.extend(progress)
            if any(p["frames_total"] and p["frames_done"] and p["eta_seconds"] is not None for p in progress):
                metrics_seen.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
                                    .read().decode())
                return True
            return False
        run.wait_for(reported, 180, "a progress report with frames and an ETA")
        running = run.status()["running_jobs"]
        text = _status_text(run)
        if running:   # the job may have finished in between; the JSON above already showed its progress
            assert "frames" in text and "ETA" in text, text
            assert "'inbox/cam2/long.mp4'" in text, text
        progress = next(p for p in seen if p["frames_total"] and p["frames_done"])
        assert progress["stage"] in ("detecting", "restoring")
        assert 0 < progress["frames_done"] <= progress["frames_total"]
        assert 0 < progress["percent"] <= 100
        assert 'facedeblur_job_progress_frames_done{job="1",stage="' in metrics_seen[0], metrics_seen[0]
        assert 'facedeblur_job_eta_seconds{job="1"}' in metrics_seen[0]

        run.wait_for(lambda: run.settled(1), 240, "the job to finish")
        assert run.jobs()[0]["state"] == "done", run.jobs()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "facedeblur_job_eta_seconds{" not in metrics   # a finished job leaves no progress series
        idle = run.status()
        assert idle["daemon"]["running"] is True and idle["running_jobs"] == []
        assert _status_text(run).startswith(f"daemon: running (pid {run.process.pid}")
    finally:
        code = run.stop()
    assert code == 0
    stopped = run.status()
    assert stopped["daemon"]["running"] is False, stopped["daemon"]
    assert not (run.state / HEARTBEAT_FILE).exists()
    assert _status_text(run).startswith("daemon: not running")


def test_a_killed_daemon_is_not_running_though_its_heartbeat_file_remains(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path).start()
    run.wait_for(lambda: (run.state / HEARTBEAT_FILE).exists(), 30, "the heartbeat file")
    assert run.status()["daemon"]["running"] is True
    run.kill9()
    assert (run.state / HEARTBEAT_FILE).exists()   # nothing removed it: the pid tells
    status = run.status()["daemon"]
    assert status["running"] is False and f"pid {run.process.pid} is not running" in status["reason"], status
    # A heartbeat that stopped coming (a hung daemon, another host) is not a running daemon either.
    beat = json.loads((run.state / HEARTBEAT_FILE).read_text())
    beat.update(pid=os.getpid(), time=time.time() - 600)
    (run.state / HEARTBEAT_FILE).write_text(json.dumps(beat))
    stale = daemon_liveness(run.state)
    assert stale["running"] is False and "no heartbeat for" in stale["reason"]


def test_progress_reports_of_another_attempt_or_a_bad_shape_are_not_shown(tmp_path: Path) -> None:
    """The journal takes a report only for the attempt running; the message type refuses impossible counts."""
    from facedeblur.daemon.journal import Journal
    journal = Journal(tmp_path)
    job = journal.add(path="/in/a.mp4", inbox="/in", rel_path="a.mp4", kind="file", size=1, mtime_ns=1, sha256=None)
    attempt = journal.mark_running(job, 123)
    assert journal.record_progress(job, attempt + 1, "restoring", 5, 10) is False   # a late report of another try
    assert journal.record_progress(job, attempt, "restoring", 5, 10) is True
    with JournalReader(tmp_path) as reader:
        row = reader.job(job)
    assert (row["progress_stage"], row["progress_done"], row["progress_total"]) == ("restoring", 5, 10)
    journal.close()
    base = dict(job_id=1, attempt=1, journal_id="a" * 32)
    for bad in (dict(stage="restoring", frames_done=11, frames_total=10), dict(stage="rm -rf", frames_done=1),
                dict(stage="restoring", frames_done=-1), dict(stage="restoring", frames_done=1, extra=1)):
        with pytest.raises(ValueError):
            JobProgress.model_validate({**base, **bad})
    assert job_fraction("restoring", 5, 10) == pytest.approx(0.45 + 0.25)


def test_remote_workers_report_progress_through_redis_and_forged_reports_are_dropped(tmp_path: Path) -> None:
    """queue.backend: celery: a real redis-server, coordinator and `facedeblur worker`. The worker's sealed reports
    reach `status`; an unsigned report, one sealed for another attempt and a progress report pushed as a result
    are each dropped without changing the job or stopping the coordinator."""
    queue = pytest.importorskip("test_queue_celery")
    if queue.REDIS_SERVER is None or queue.redis is None:
        pytest.skip("needs redis-server and the queue extra")
    from facedeblur.daemon.broker import progress_key
    from facedeblur.daemon.messages import seal
    server = queue.RedisServer(tmp_path).start()
    try:
        run = queue.celery_run(tmp_path / "site", server)
        with queue.cluster(run, server, tmp_path, 1):
            queue.drop_clips(run, ["long.mp4"], frames=150, first_seed=5)
            run.wait_for(lambda: any(j.get("progress") and j["progress"]["frames_done"]
                                     for j in run.status()["running_jobs"]), 180, "a remote progress report")
            job = run.status()["running_jobs"][0]
            journal_id = queue.journal_id_of(run)
            client = server.client()
            forged_attempt = JobProgress(job_id=job["id"], attempt=job["attempt"] + 5, journal_id=journal_id,
                                         stage="gallery", frames_done=0)
            client.hset(progress_key(journal_id), "999", json.dumps({"job_id": 999, "stage": "gallery"}))
            client.hset(progress_key(journal_id), str(job["id"]), json.dumps(seal(forged_attempt, queue.SECRET)))
            client.rpush(f"facedeblur:results:{journal_id}", json.dumps(seal(forged_attempt, queue.SECRET)))
            run.wait_for(lambda: "unsigned progress report" in run.log() and
                         "badly signed result" in run.log(), 30, "the forged reports to be rejected")
            assert client.hget(progress_key(journal_id), "999") is None   # read once, then dropped
            run.wait_for(lambda: run.settled(1), 240, "the clip")
        queue.assert_processed_exactly_once(run, ["long.mp4"])
        assert client.hlen(progress_key(journal_id)) == 0
    finally:
        server.kill()
