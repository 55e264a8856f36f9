"""Exactly-once beyond one journal: published outputs are recognised by (journal, job, content), not by name,
and a file that changes after it was taken supersedes its older job instead of failing or publishing twice."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from facedeblur.daemon.journal import Journal
from facedeblur.daemon.worker import find_published, publish, publish_identity

from daemon_support import DaemonRun, clip_bytes, make_clip

OLD_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, inbox TEXT NOT NULL, rel_path TEXT NOT NULL,
    kind TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','duplicate')),
    attempts INTEGER NOT NULL DEFAULT 0, interruptions INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, seconds REAL, frames INTEGER, faces INTEGER,
    output TEXT, output_deleted_at REAL, duplicate_of INTEGER REFERENCES jobs(id), failed_copy TEXT, error TEXT,
    worker_pid INTEGER);
"""


def test_a_journal_from_before_superseded_is_migrated_with_its_rows_and_ids(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "journal.sqlite3") as raw:
        raw.executescript(OLD_SCHEMA)
        raw.execute("INSERT INTO jobs (id, path, inbox, rel_path, kind, size, mtime_ns, sha256, state, created_at) "
                    "VALUES (7, '/in/a.mp4', '/in', 'a.mp4', 'file', 10, 1, 'h', 'queued', 0)")
    journal = Journal(tmp_path)
    assert journal.get(7).state == "queued"
    journal.supersede(7, "newer content", by=None)        # the old CHECK constraint would refuse this
    assert journal.get(7).state == "superseded" and journal.counts()["superseded"] == 1
    first_id = journal.journal_id
    assert first_id and len(first_id) == 32
    journal.close()
    again = Journal(tmp_path)
    assert again.journal_id == first_id and again.get(7).rel_path == "a.mp4"   # stable, migrated once
    again.close()


def _fake_output(folder: Path, journal_id: str, job_id: int, sha: str) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"daemon": {"journal_id": journal_id, "job_id": job_id,
                                                                 "sha256": sha}}), encoding="utf-8")
    return folder


def test_a_folder_of_the_same_name_from_another_journal_is_never_taken_for_this_job(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    _fake_output(outbox / "clip.mp4-j1", "other-journal", 1, "aaa")
    assert find_published(outbox, "clip.mp4-j1", ("this-journal", 1, "aaa")) is None
    assert find_published(outbox, "clip.mp4-j1", ("other-journal", 1, "bbb")) is None     # other content
    assert find_published(outbox, "clip.mp4-j1", ("other-journal", 1, "aaa")) == outbox / "clip.mp4-j1"
    staging = _fake_output(tmp_path / "staged", "this-journal", 1, "aaa")
    final = publish(staging, outbox, "clip.mp4-j1")
    assert final == outbox / "clip.mp4-j1-2" and publish_identity(final) == ("this-journal", 1, "aaa")
    assert publish_identity(outbox / "clip.mp4-j1") == ("other-journal", 1, "aaa")   # left alone
    assert find_published(outbox, "clip.mp4-j1", ("this-journal", 1, "aaa")) == final


@pytest.mark.slow
def test_a_moved_journal_and_a_second_daemon_on_the_same_outbox_each_publish_their_own(tmp_path: Path) -> None:
    first = DaemonRun(tmp_path / "a").start()
    make_clip(first.inbox / "clip.mp4", frames=6, seed=1)
    first.wait_for(lambda: first.settled(1) and first.jobs(), 120, "the clip to be processed")
    assert first.stop() == 0
    # "Move the journal away to process everything again": a new journal, the same inbox and outbox.
    shutil.move(str(first.state), str(tmp_path / "old-state"))
    first.state.mkdir()
    first.start()
    first.wait_for(lambda: first.settled(1) and first.jobs(), 120, "the clip to be processed again")
    assert first.stop() == 0
    # A second daemon (its own inbox and journal) shares the outbox; its clip has the same name, other bytes.
    second = DaemonRun(tmp_path / "b", outbox=first.outbox)
    make_clip(second.inbox / "clip.mp4", frames=6, seed=2)
    second.start()
    second.wait_for(lambda: second.settled(1) and second.jobs(), 120, "the second daemon's clip")
    assert second.stop() == 0

    published = first.published()
    assert [p.name for p in published] == ["clip.mp4-j1", "clip.mp4-j1-2", "clip.mp4-j1-3"]
    identities = [publish_identity(p) for p in published]
    assert len({journal for journal, _, _ in identities}) == 3          # three journals, none confused
    sha_a = hashlib.sha256((first.inbox / "clip.mp4").read_bytes()).hexdigest()
    sha_b = hashlib.sha256((second.inbox / "clip.mp4").read_bytes()).hexdigest()
    assert [sha for _, _, sha in identities] == [sha_a, sha_a, sha_b]
    for run, folder in ((first, published[1]), (second, published[2])):
        (job,) = run.jobs()
        assert job["state"] == "done" and Path(job["output"]) == folder


@pytest.mark.slow
def test_a_writer_that_pauses_past_stable_seconds_supersedes_its_half_written_job(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path, workers=1).start()
    # A long clip keeps the only worker busy, so the half-written one waits in the queue.
    (run.inbox / "long.mp4").write_bytes(clip_bytes(tmp_path, frames=240, width=320, height=240, seed=3))
    run.wait_for(lambda: any(j["state"] == "running" for j in run.jobs()), 60, "the long clip to start")
    full = clip_bytes(tmp_path, frames=8, seed=4)
    half = run.inbox / "late.mp4"
    half.write_bytes(full[: len(full) // 2])
    run.wait_for(lambda: any(j["rel_path"] == "late.mp4" for j in run.jobs()), 60, "the half-written clip to be taken")
    if not any(j["state"] == "running" and j["rel_path"] == "long.mp4" for j in run.jobs()):
        pytest.skip("the long clip finished before the half-written one was queued (machine too fast)")
    with open(half, "ab") as writer:   # the writer goes on after its pause
        writer.write(full[len(full) // 2:])
    run.wait_for(lambda: run.settled(3), 240, "both versions to settle")
    assert run.stop() == 0

    late = [j for j in run.jobs() if j["rel_path"] == "late.mp4"]
    assert [j["state"] for j in late] == ["superseded", "done"], late
    assert late[0]["superseded_by"] == late[1]["id"] and "changed after it was taken" in late[0]["error"]
    assert late[1]["sha256"] == hashlib.sha256(full).hexdigest()
    manifests = [m for m in run.manifests() if m["daemon"]["input"] == "late.mp4"]
    assert len(manifests) == 1 and manifests[0]["input"]["sha256"] == hashlib.sha256(full).hexdigest()
    assert not any((run.outbox / "failed").glob("late*"))          # never counted as a failure


@pytest.mark.parametrize("after", ["move", "delete"])
def test_a_half_clip_that_fails_while_its_writer_pauses_is_copied_not_moved_and_processed_once_complete(
        tmp_path: Path, after: str) -> None:
    """The writer keeps the file open through a pause longer than stable_seconds; the half clip fails as not a
    readable video. It must stay where the writer is writing (a copy goes to failed/), and the completed clip is
    processed once."""
    run = DaemonRun(tmp_path, after=after, done_folder=str(tmp_path / "done")).start()
    full = clip_bytes(tmp_path, frames=8, seed=5)
    path = run.inbox / "paused.mp4"
    with open(path, "wb") as writer:
        writer.write(full[: len(full) // 2])
        writer.flush()
        run.wait_for(lambda: any(j["state"] == "failed" for j in run.jobs()), 90, "the half clip to fail")
        writer.write(full[len(full) // 2:])
    run.wait_for(lambda: any(j["state"] == "done" for j in run.jobs()), 120, "the completed clip")
    assert run.stop() == 0
    jobs = run.jobs()
    assert [j["state"] for j in jobs] == ["failed", "done"], jobs
    assert jobs[1]["sha256"] == hashlib.sha256(full).hexdigest()
    (manifest,) = run.manifests()
    assert manifest["input"]["sha256"] == hashlib.sha256(full).hexdigest()
    copy = run.outbox / "failed" / f"paused.mp4-j{jobs[0]['id']}.mp4"
    assert copy.read_bytes() == full[: len(full) // 2]              # the half, as it failed; never written to again
    if after == "move":
        assert (tmp_path / "done" / "paused.mp4").read_bytes() == full
    else:
        assert not path.exists()
