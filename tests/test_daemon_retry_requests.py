"""A reviewer's retry request, taken by the daemon's side over a real journal and a real state folder: a failed
input still unchanged in the inbox is queued again as a new job; anything else is answered with the reason."""
from __future__ import annotations

import os

from facedeblur.daemon.journal import Journal
from facedeblur.daemon.retry_requests import request_retry, retry_status, take_requests


def failed_job(journal: Journal, path) -> int:
    info = os.stat(path)
    job_id = journal.add(path=str(path), inbox=str(path.parent), rel_path=path.name, kind="file", size=info.st_size,
                         mtime_ns=info.st_mtime_ns, sha256="0" * 64)
    journal.mark_failed(job_id, "not a readable video", None)
    return job_id


def test_an_unchanged_failed_input_is_queued_again_as_a_new_job(tmp_path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    (tmp_path / "state").mkdir()
    journal = Journal(tmp_path / "state")
    try:
        job_id = failed_job(journal, clip)
        assert retry_status(tmp_path / "state", job_id) is None
        request_retry(tmp_path / "state", job_id, "alice")
        assert retry_status(tmp_path / "state", job_id)["who"] == "alice"
        new_jobs = take_requests(journal, tmp_path / "state")
        assert len(new_jobs) == 1 and new_jobs[0] != job_id
        again = journal.get(new_jobs[0])
        assert (again.state, again.path, again.size) == ("queued", str(clip), 100)
        assert journal.get(job_id).state == "failed"                     # the failed job keeps its history
        assert retry_status(tmp_path / "state", job_id) == {**retry_status(tmp_path / "state", job_id),
                                                           "who": "alice", "new_job": new_jobs[0]}
        assert take_requests(journal, tmp_path / "state") == []           # answered once
    finally:
        journal.close()


def test_a_changed_missing_or_unfailed_input_is_refused_with_the_reason(tmp_path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = Journal(state)
    try:
        changed, gone = tmp_path / "changed.mp4", tmp_path / "gone.mp4"
        for path in (changed, gone):
            path.write_bytes(b"y" * 50)
        changed_id, gone_id = failed_job(journal, changed), failed_job(journal, gone)
        changed.write_bytes(b"y" * 60)
        gone.unlink()
        done_id = journal.add(path=str(changed), inbox=str(tmp_path), rel_path="changed.mp4", kind="file", size=60,
                              mtime_ns=0, sha256="1" * 64)
        journal.mark_done(done_id, str(tmp_path / "out"), 1.0, 1, 0, 0)
        for job_id in (changed_id, gone_id, done_id, 999):
            request_retry(state, job_id, "bob")
        assert take_requests(journal, state) == []
        assert "changed since it failed" in retry_status(state, changed_id)["refused"]
        assert "no longer in the inbox" in retry_status(state, gone_id)["refused"]
        assert "done, not failed" in retry_status(state, done_id)["refused"]
        assert retry_status(state, 999)["refused"] == "no such job"
        assert len([job for job in journal.db.execute("SELECT id FROM jobs")]) == 3
    finally:
        journal.close()
