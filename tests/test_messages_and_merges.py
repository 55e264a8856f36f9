"""Quick checks on real files and a real SQLite store: inputs named by their inbox path in a worker's error, the one
documented list of extensions, and the review store's not-a-face mark and track merges."""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from facedeblur.config import PipelineSettings
from facedeblur.daemon.journal import inbox_name, shown_error
from facedeblur.daemon.messages import JobTicket, Outcome
from facedeblur.daemon.worker import output_name, run_job
from facedeblur.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from facedeblur.review.store import MergeRefused, ReviewStore

REPO = Path(__file__).resolve().parents[1]


def test_a_worker_names_a_broken_input_by_its_inbox_path_and_points_to_the_docs(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "cam2").mkdir(parents=True)
    outbox.mkdir()
    broken = inbox / "cam2" / "broken.mp4"
    broken.write_bytes(b"this is not a video " * 500)
    ticket = JobTicket(id=2, attempt=1, journal_id="c" * 32, path=str(broken), inbox=str(inbox),
                       rel_path="cam2/broken.mp4", kind="file", size=broken.stat().st_size, mtime_ns=1, sha256=None,
                       outbox=str(outbox), name=output_name("cam2/broken.mp4", 2))
    # The input is refused before any model is needed (open_source checks it first).
    result = run_job(ticket, PipelineSettings(), models=None)
    assert result.outcome is Outcome.INPUT_FAULT_PERMANENT, result
    assert result.error.startswith("inbox/cam2/broken.mp4: not a readable video ("), result.error
    assert ".staging" not in result.error and str(tmp_path) not in result.error
    assert 'supported video (docs/footage-pipeline.md, "Supported inputs")' in result.error
    assert not any(ext in result.error for ext in (".m2ts", ".hevc", ".dav"))


def test_errors_recorded_by_an_older_daemon_are_shown_with_the_inbox_path() -> None:
    held = "/srv/out/.staging/cam2__broken.mp4-j2.input/broken.mp4: not a readable video (x); check it"
    assert shown_error(held, "/srv/inbox", "cam2/broken.mp4") == "inbox/cam2/broken.mp4: not a readable video (x); check it"
    absolute = "/srv/inbox/cam2/broken.mp4: empty file (0 bytes)"
    assert shown_error(absolute, "/srv/inbox", "cam2/broken.mp4") == "inbox/cam2/broken.mp4: empty file (0 bytes)"
    assert inbox_name("/srv/inbox/", "a\nb.mp4") == "inbox/a\\nb.mp4"   # printable, one line


def test_the_supported_extensions_are_listed_once_in_the_docs_as_the_code_has_them() -> None:
    text = (REPO / "docs" / "footage-pipeline.md").read_text(encoding="utf-8")
    section = text.split("## Supported inputs", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert set(re.findall(r"`(\.[\w]+)`", rows["video"])) == set(VIDEO_EXTENSIONS)
    assert set(re.findall(r"`(\.[\w]+)`", rows["image"])) == set(IMAGE_EXTENSIONS)
    decode = (REPO / "src" / "facedeblur" / "footage" / "decode.py").read_text(encoding="utf-8")
    assert "VIDEO_EXTENSIONS" not in decode   # errors point to the docs instead of enumerating


def test_an_older_store_gains_the_not_a_face_mark_keeping_its_marks_and_audit(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "review.sqlite3")
    db.executescript("""
        CREATE TABLE marks (job_id INTEGER NOT NULL, track_id INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('unmarked','reviewed','flagged')), note TEXT NOT NULL DEFAULT '',
            version INTEGER NOT NULL, updated_by TEXT NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, track_id));
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
            action TEXT NOT NULL, job_id INTEGER, track_id INTEGER, before TEXT, after TEXT NOT NULL);
        INSERT INTO marks VALUES (1, 1, 'flagged', 'old note', 1, 'ann', 1.0);
        INSERT INTO audit (at, who, action, job_id, track_id, before, after)
            VALUES (1.0, 'ann', 'mark', 1, 1, NULL, '{"status": "flagged", "note": "old note", "version": 1}');
    """)
    db.close()
    store = ReviewStore(tmp_path)
    assert store.marks_for_job(1)[1].note == "old note"
    changed = store.set_mark(1, 1, "not_a_face", "a poster", "bob", seen_version=1)
    assert changed.status == "not_a_face" and changed.version == 2
    assert [entry["who"] for entry in store.history(1, 1)] == ["ann", "bob"]
    assert store.counts_for_jobs([1]) == {1: {"not_a_face": 1}}


def test_merges_make_people_are_refused_when_pointless_and_undo_with_an_audit_trail(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path)
    store.merge_tracks(7, 5, 2, "ann")
    store.merge_tracks(7, 9, 5, "bob")            # a chain: one person of three tracks
    store.merge_tracks(8, 3, 1, "ann")            # another job is another job
    assert store.person_groups(7) == {2: [2, 5, 9]}
    assert store.person_groups(8) == {1: [1, 3]}
    for track, into, why in ((4, 4, "into itself"), (2, 9, "already one person"), (5, 4, "unmerge it first")):
        with pytest.raises(MergeRefused, match=why):
            store.merge_tracks(7, track, into, "ann")
    undone = store.unmerge_track(7, 5, "carl")
    assert undone.undone_by == "carl" and undone.into_track == 2
    assert store.person_groups(7) == {5: [5, 9]}   # 9 still names 5 as the same person
    with pytest.raises(MergeRefused, match="not merged"):
        store.unmerge_track(7, 5, "carl")
    store.merge_tracks(7, 5, 2, "dora")           # merged again after the undo
    assert store.person_groups(7) == {2: [2, 5, 9]}
    audit = [(e["action"], e["track_id"], e["who"]) for e in store.history(7)]
    assert audit == [("merge", 5, "ann"), ("merge", 9, "bob"), ("unmerge", 5, "carl"), ("merge", 5, "dora")]
    db = sqlite3.connect(tmp_path / "review.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE action = 'unmerge'")
    assert db.execute("SELECT COUNT(*) FROM merges WHERE job_id = 7").fetchone()[0] == 3   # the undone merge is kept
    db.close()


def test_every_store_change_and_its_audit_row_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    from facedeblur.review.cases import CaseError
    from facedeblur.review.store import StaleMark

    store = ReviewStore(tmp_path)

    def rows() -> tuple[int, int, int, int]:
        db = sqlite3.connect(tmp_path / "review.sqlite3")
        try:
            return tuple(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                         for table in ("audit", "marks", "merges", "case_tracks"))
        finally:
            db.close()

    mark = store.set_mark(3, 1, "flagged", "check the jacket", "ann", seen_version=0)
    store.merge_tracks(3, 2, 1, "ann")
    case = store.create_case("Side door", "ann")
    store.rename_case(case, "Side door, Tuesday", "bob")
    assert store.set_case_track(case, 3, 1, True, "bob")
    before = rows()
    refused = ((StaleMark, lambda: store.set_mark(3, 1, "reviewed", "", "carl", seen_version=0)),
               (MergeRefused, lambda: store.merge_tracks(3, 2, 1, "carl")),
               (MergeRefused, lambda: store.unmerge_track(3, 1, "carl")),
               (CaseError, lambda: store.rename_case(case + 1, "no such case", "carl")),
               (CaseError, lambda: store.set_case_track(case + 1, 3, 1, True, "carl")))
    for error, change in refused:
        with pytest.raises(error):
            change()
    assert not store.set_case_track(case, 3, 1, True, "carl")          # already in the case: nothing changes
    assert rows() == before == (5, 1, 1, 1)
    store.unmerge_track(3, 2, "dora")
    assert store.set_case_track(case, 3, 1, False, "dora")
    track_rows = [(e["action"], e["who"], e["before"], e["after"]) for e in store.history(3)]
    assert track_rows == [("mark", "ann", None, {"status": "flagged", "note": "check the jacket", "version": 1}),
                          ("merge", "ann", None, {"merge": 1, "into_track": 1}),
                          ("unmerge", "dora", {"merge": 1, "into_track": 1}, {"merge": 1, "into_track": None})]
    assert mark.version == 1
    case_rows = [(e["who"], e["after"]["op"]) for e in store.case_history(case)]
    assert case_rows == [("ann", "create"), ("bob", "rename"), ("bob", "add"), ("dora", "remove")]
    assert store.case(case).name == "Side door, Tuesday" and store.case(case).tracks == ()
