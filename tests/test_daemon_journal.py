"""The journal on a real SQLite file, output naming, and stable-file detection on a real growing file."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from facedeblur.config import DaemonSettings
from facedeblur.daemon.journal import Journal, JournalReader
from facedeblur.daemon.scanning import InputRules, Unit
from facedeblur.daemon.stability import StabilityTracker, sha256_of, signature_of
from facedeblur.daemon.worker import output_name


def _add(journal: Journal, path: str, size: int = 10, mtime_ns: int = 1, sha: str | None = "aa") -> int:
    return journal.add(path=f"/in/{path}", inbox="/in", rel_path=path, kind="file", size=size, mtime_ns=mtime_ns,
                       sha256=sha)


def test_journal_lifecycle_survives_reopen_and_requeues_interrupted_jobs(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    first, second, third = _add(journal, "a.mp4", sha="h1"), _add(journal, "b.mp4", sha="h2"), _add(journal, "c.mp4", sha="h3")
    assert journal.known("/in/a.mp4", 10, 1) and not journal.known("/in/a.mp4", 11, 1)
    assert [j.id for j in journal.next_queued(5)] == [first, second, third]
    journal.mark_running(first, pid=123)
    journal.mark_running(second, pid=124)
    journal.mark_done(second, "/out/b-j2", 1.5, 10, 1)
    # A failed run that is the machine's fault does not use up an attempt; one that is the input's does.
    journal.mark_running(third, pid=125)
    journal.mark_retry(third, "disk full", delay=0, count_attempt=False)
    assert journal.get(third).attempts == 0
    journal.mark_running(third, pid=125)
    journal.mark_retry(third, "corrupt", delay=3600)
    assert journal.get(third).attempts == 1
    assert third not in [j.id for j in journal.next_queued(5)]          # backing off
    journal.close()   # as if the daemon were killed with job 1 running

    reopened = Journal(tmp_path)
    assert reopened.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 0, "duplicate": 0, "superseded": 0}
    requeued = reopened.requeue_interrupted()
    assert [j.id for j in requeued] == [first]
    job = reopened.get(first)
    assert (job.state, job.attempts, job.interruptions) == ("queued", 0, 1)
    assert reopened.done_with_hash("h2").id == second
    assert reopened.done_with_hash("nope") is None
    reopened.close()

    readonly = JournalReader(tmp_path)   # what `facedeblur status` uses
    assert readonly.counts()["done"] == 1
    readonly.close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_output_names_are_safe_and_never_collide() -> None:
    names = {output_name(rel, job) for rel, job in [("cam1/clip.mp4", 1), ("cam2/clip.mp4", 2), ("clip.mp4", 3),
                                                    ("cam1__clip.mp4", 4)]}
    assert len(names) == 4
    awkward = output_name("a b/ünï\ncode\t name.mp4", 7)
    assert "/" not in awkward and "\n" not in awkward and " " not in awkward and awkward.endswith("-j7")
    assert "ünï" in awkward
    assert len(output_name("x" * 400 + ".mp4", 12).encode()) < 200


def test_stability_waits_for_a_growing_file_and_drops_a_vanished_one(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    tracker = StabilityTracker(0.5)
    growing = Unit(inbox / "grow.mp4", inbox, "file")
    doomed = Unit(inbox / "gone.mp4", inbox, "file")
    with open(growing.path, "wb") as handle:
        tracker.touch(growing)
        for _ in range(6):    # writes every 0.2 s for 1.2 s: never still for 0.5 s
            handle.write(b"y" * 1000)
            handle.flush()
            os.utime(growing.path)
            stable, _ = tracker.poll()
            assert growing not in [u for u, _ in stable]
            time.sleep(0.2)
    doomed.path.write_bytes(b"x")      # seen once, then deleted before it was stable
    tracker.touch(doomed)
    doomed.path.unlink()
    deadline = time.monotonic() + 5
    found_stable, found_vanished = [], []
    while time.monotonic() < deadline and not (found_stable and found_vanished):
        stable, vanished = tracker.poll()
        found_stable += stable
        found_vanished += vanished
        time.sleep(0.1)
    assert [u for u, _ in found_stable] == [growing]
    assert found_stable[0][1].size == 6000
    assert found_vanished == [doomed]
    assert len(sha256_of(growing, signature_of(growing))) == 64


def test_scanning_rules_patterns_frame_folders_and_symlinks(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    for folder in (inbox / "cam1", inbox / "frames_drop", inbox / "@eaDir", inbox / ".hidden", outside):
        folder.mkdir(parents=True)
    for name in ("cam1/a.mp4", "cam1/b.MOV", "cam1/notes.txt", "cam1/c.mp4.part", "cam1/.d.mp4", "cam1/e.mp4~",
                 "frames_drop/0001.png", "frames_drop/0002.png", "@eaDir/x.mp4", ".hidden/y.mp4", "photo.jpg",
                 "Thumbs.db"):
        (inbox / name).write_bytes(b"z")
    (outside / "secret.mp4").write_bytes(b"s")
    (inbox / "link.mp4").symlink_to(outside / "secret.mp4")
    found = sorted(u.rel_path for u in InputRules(DaemonSettings(inbox=[inbox])).scan_all())
    assert found == ["cam1/a.mp4", "cam1/b.MOV", "frames_drop", "photo.jpg"]
    following = sorted(u.rel_path for u in InputRules(DaemonSettings(inbox=[inbox], follow_symlinks=True)).scan_all())
    assert "link.mp4" in following
    flat = sorted(u.rel_path for u in InputRules(DaemonSettings(inbox=[inbox], recursive=False)).scan_all())
    assert flat == ["frames_drop", "photo.jpg"]


def test_retention_deletes_old_and_over_budget_outputs_only(tmp_path: Path) -> None:
    from facedeblur.daemon.retention import apply_retention
    from facedeblur.daemon.review_index import write_review_index
    from facedeblur.review.originals import PROXY_FOLDER, proxy_name
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    journal = Journal(tmp_path)
    ids = []
    for i, (age_days, size) in enumerate([(10, 1000), (2, 300_000), (1, 300_000), (0, 300_000)]):
        folder = outbox / f"clip{i}.mp4-j{i + 1}"
        folder.mkdir()
        (folder / "restored.mp4").write_bytes(b"v" * size)
        (folder / "index.html").write_text("<html></html>")
        job = _add(journal, f"clip{i}.mp4", sha=f"s{i}")
        journal.mark_running(job, 1)
        journal.mark_done(job, str(folder), 1.0, 10, 1)
        journal.db.execute("UPDATE jobs SET finished_at=? WHERE id=?", (time.time() - age_days * 86400, job))
        ids.append(job)
    (outbox / "failed").mkdir()
    (outbox / "failed" / "old.mp4").write_bytes(b"f")
    # The review server's playable proxies of the inputs (review/originals.py), kept in the state folder.
    proxies = tmp_path / PROXY_FOLDER
    proxies.mkdir()
    for job in ids:
        name = proxy_name(job, f"{job:064x}")
        (proxies / name).write_bytes(b"proxy")
        (proxies / f"{name}.json").write_text("{}")
    (proxies / "notes.txt").write_text("a person's file")
    assert apply_retention(journal, outbox, None, None) == 0
    assert apply_retention(journal, outbox, 5, None) == 1             # only the 10-day-old one
    assert not (outbox / "clip0.mp4-j1").exists() and (outbox / "clip1.mp4-j2").exists()
    assert not any(p.name.startswith("j1-") for p in proxies.iterdir())   # its proxy went with it
    assert apply_retention(journal, outbox, 5, 0.0007) == 1           # 700 kB budget: the oldest of three goes
    remaining = sorted(p.name for p in outbox.iterdir())
    assert remaining == ["clip2.mp4-j3", "clip3.mp4-j4", "failed"]
    assert sorted(p.name for p in proxies.iterdir()) == sorted(
        [proxy_name(job, f"{job:064x}") + suffix for job in ids[2:] for suffix in ("", ".json")] + ["notes.txt"])
    assert journal.counts()["done"] == 4                              # history is kept
    page = write_review_index(journal, outbox).read_text(encoding="utf-8")
    assert page.index("clip3.mp4-j4") < page.index("clip2.mp4-j3") and "clip1" not in page
