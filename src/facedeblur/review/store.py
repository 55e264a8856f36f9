"""Review marks, named cases and login sessions beside the journal (STATE/review.sqlite3), with an
append-only audit log.

A mark is (job, track) -> reviewed | flagged | unmarked, with a note. Every change carries the version the
reviewer saw; a change made on top of an older version is refused (the reviewer is shown the newer mark and
decides again), so two reviewers can never silently overwrite each other. The version check, the update and
the audit row are one transaction taken with BEGIN IMMEDIATE, which serialises writers across threads and
processes. Triggers make the audit table refuse UPDATE and DELETE, so history can only grow.

Cases (a name and a set of (job, track)) are shared by every reviewer; each change to one is an audit row
(action 'case'). Login sessions are kept here too, by the SHA-256 of their random id, so a restart of the
server does not log anyone out while logout still revokes a session at once.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import FacedeblurError
from .cases import CaseStoreMixin

REVIEW_FILE = "review.sqlite3"
MARK_STATES = ("unmarked", "reviewed", "flagged", "not_a_face")
NOTE_LIMIT = 4000
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    job_id     INTEGER NOT NULL,
    track_id   INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('unmarked','reviewed','flagged','not_a_face')),
    note       TEXT NOT NULL DEFAULT '',
    version    INTEGER NOT NULL,          -- 1 for the first mark, +1 on every change
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, track_id)
);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    who      TEXT NOT NULL,
    action   TEXT NOT NULL,               -- 'mark', 'export', 'merge', 'unmerge' or 'retry'
    job_id   INTEGER,
    track_id INTEGER,
    before   TEXT,                        -- JSON of the mark before (null: none yet)
    after    TEXT NOT NULL                -- JSON of the mark after, or of the export
);
CREATE INDEX IF NOT EXISTS audit_track ON audit (job_id, track_id, id);
CREATE TABLE IF NOT EXISTS merges (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL,
    track_id   INTEGER NOT NULL,          -- the track merged ...
    into_track INTEGER NOT NULL CHECK (into_track != track_id),   -- ... into this one: the same person
    merged_by  TEXT NOT NULL,
    merged_at  REAL NOT NULL,
    undone_by  TEXT,                      -- set by an unmerge; the row stays, so the table is also a history
    undone_at  REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS merges_live ON merges (job_id, track_id) WHERE undone_at IS NULL;
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the review audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the review audit log is append-only'); END;
"""

# Added after the first release: CREATE ... IF NOT EXISTS, so opening an older review.sqlite3 adds them and
# leaves every mark and audit row as it was.
CASES_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS case_tracks (
    case_id  INTEGER NOT NULL REFERENCES cases (id),
    job_id   INTEGER NOT NULL,
    track_id INTEGER NOT NULL,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (case_id, job_id, track_id)
);
CREATE TABLE IF NOT EXISTS login_sessions (
    id_sha256  TEXT PRIMARY KEY,          -- the cookie carries the id; a copy of this table does not log in
    user       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_sessions_age ON login_sessions (created_at);
-- a case page reads its own audit rows among every mark's
CREATE INDEX IF NOT EXISTS audit_case ON audit (json_extract(after, '$.case')) WHERE action = 'case';
CREATE INDEX IF NOT EXISTS audit_case_export ON audit (json_extract(after, '$.server_case')) WHERE action = 'export';
"""


def _allow_new_mark_states(db: sqlite3.Connection) -> None:
    """A store made before a mark state existed keeps the old CHECK in its marks table: the table is rebuilt
    once (same rows) inside one transaction. The audit log is not touched."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='marks'").fetchone()
    if row is None or all(f"'{state}'" in row[0] for state in MARK_STATES):
        return
    marks_table = SCHEMA.split("CREATE TABLE IF NOT EXISTS marks", 1)[1].split(";", 1)[0]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE marks_new" + marks_table)
        db.execute("INSERT INTO marks_new SELECT job_id, track_id, status, note, version, updated_by, updated_at "
                   "FROM marks")
        db.execute("DROP TABLE marks")
        db.execute("ALTER TABLE marks_new RENAME TO marks")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@dataclass(frozen=True)
class Merge:
    """Track `track_id` of job `job_id` is the same person as track `into_track` (undone once undone_at is set)."""
    id: int
    job_id: int
    track_id: int
    into_track: int
    merged_by: str
    merged_at: float
    undone_by: str | None = None
    undone_at: float | None = None


class MergeRefused(ValueError):
    """A merge or unmerge that cannot be done as asked; the message says why."""


def _groups(pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Connected tracks of the live merges: lowest track id -> every track id of that person, sorted."""
    parent: dict[int, int] = {}

    def root(track: int) -> int:
        parent.setdefault(track, track)
        while parent[track] != track:
            parent[track] = parent[parent[track]]
            track = parent[track]
        return track
    for track, into in pairs:
        a, b = root(track), root(into)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for track in parent:
        groups.setdefault(root(track), []).append(track)
    return {min(members): sorted(members) for members in groups.values()}


@dataclass(frozen=True)
class Mark:
    job_id: int
    track_id: int
    status: str = "unmarked"
    note: str = ""
    version: int = 0          # 0: never marked
    updated_by: str = ""
    updated_at: float = 0.0

    def content(self) -> dict[str, Any]:
        return {"status": self.status, "note": self.note, "version": self.version}


class StaleMark(Exception):
    """The mark changed since the reviewer loaded it; `current` is what it is now."""

    def __init__(self, current: Mark):
        super().__init__(f"track {current.track_id} of job {current.job_id} was changed by {current.updated_by}")
        self.current = current


class ReviewStore(CaseStoreMixin):
    def __init__(self, state: Path):
        self.path = Path(state) / REVIEW_FILE
        try:
            db = self._connect()
            db.execute("PRAGMA journal_mode=WAL")
            _allow_new_mark_states(db)
            db.executescript(SCHEMA)
            db.executescript(CASES_SCHEMA)
            db.close()
        except sqlite3.Error as exc:
            raise FacedeblurError(f"the review store {self.path} cannot be opened ({exc}); the state folder must "
                                  "be writable by the server (systemd: StateDirectory=)") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")   # a mark a reviewer saw saved survives a power cut
        return db

    def _audited_change(self, who: str, action: str, change: Callable[[sqlite3.Connection, float], tuple[T, Any, Any]],
                        job_id: int | None = None, track_id: int | None = None) -> T:
        """Run `change(db, now)`, which returns (result, before, after), and write the audit row of that change
        (before: JSON or null, after: JSON), in one BEGIN IMMEDIATE transaction: both are written or neither.
        Returns the result."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                result, before, after = change(db, now)
                db.execute("INSERT INTO audit (at, who, action, job_id, track_id, before, after) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (now, who, action, job_id, track_id,
                            None if before is None else json.dumps(before, sort_keys=True),
                            json.dumps(after, sort_keys=True)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()
        return result

    @staticmethod
    def _mark(row: sqlite3.Row | None, job_id: int, track_id: int) -> Mark:
        return Mark(**dict(row)) if row is not None else Mark(job_id, track_id)

    def marks_for_job(self, job_id: int) -> dict[int, Mark]:
        db = self._connect()
        try:
            rows = db.execute("SELECT * FROM marks WHERE job_id = ?", (job_id,)).fetchall()
        finally:
            db.close()
        return {row["track_id"]: self._mark(row, job_id, row["track_id"]) for row in rows}

    def counts_for_jobs(self, job_ids: list[int]) -> dict[int, dict[str, int]]:
        """{job: {'reviewed': n, 'flagged': n}} for the list page, one query for the whole page."""
        if not job_ids:
            return {}
        db = self._connect()
        try:
            marks = ",".join("?" * len(job_ids))
            rows = db.execute(f"SELECT job_id, status, COUNT(*) AS n FROM marks WHERE job_id IN ({marks}) "
                              "AND status != 'unmarked' GROUP BY job_id, status", job_ids).fetchall()
        finally:
            db.close()
        counts: dict[int, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["job_id"], {})[row["status"]] = row["n"]
        return counts

    def set_mark(self, job_id: int, track_id: int, status: str, note: str, who: str,
                 seen_version: int) -> Mark:
        """Change a mark made on top of `seen_version`; raises StaleMark when someone changed it since."""
        if status not in MARK_STATES:
            raise ValueError(f"status {status!r} is not one of {', '.join(MARK_STATES)}")
        note = note.replace("\r\n", "\n")[:NOTE_LIMIT]

        def change(db: sqlite3.Connection, now: float) -> tuple[Mark, dict | None, dict]:
            current = self._mark(db.execute("SELECT * FROM marks WHERE job_id = ? AND track_id = ?",
                                            (job_id, track_id)).fetchone(), job_id, track_id)
            if current.version != seen_version:
                raise StaleMark(current)
            changed = Mark(job_id, track_id, status, note, current.version + 1, who, now)
            db.execute("INSERT INTO marks (job_id, track_id, status, note, version, updated_by, updated_at) "
                       "VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, track_id) DO UPDATE SET "
                       "status = excluded.status, note = excluded.note, version = excluded.version, "
                       "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                       tuple(asdict(changed).values()))
            return changed, current.content() if current.version else None, changed.content()
        return self._audited_change(who, "mark", change, job_id, track_id)

    # ---- one person across tracks: merges (read by case exports through person_groups) -----------------------
    def merge_tracks(self, job_id: int, track_id: int, into_track: int, who: str) -> Merge:
        """Record that two tracks of a job show one person; audit-logged, undone by unmerge_track."""
        if track_id == into_track:
            raise MergeRefused(f"track {track_id} cannot be merged into itself; pick another track")

        def change(db: sqlite3.Connection, now: float) -> tuple[Merge, None, dict]:
            live = self._live_merges(db, job_id)
            groups = _groups([(m.track_id, m.into_track) for m in live])
            if any(track_id in members and into_track in members for members in groups.values()):
                raise MergeRefused(f"tracks {track_id} and {into_track} are already one person")
            if any(m.track_id == track_id for m in live):
                raise MergeRefused(f"track {track_id} is already merged into another track; unmerge it first")
            cursor = db.execute("INSERT INTO merges (job_id, track_id, into_track, merged_by, merged_at) "
                                "VALUES (?,?,?,?,?)", (job_id, track_id, into_track, who, now))
            merge = Merge(int(cursor.lastrowid), job_id, track_id, into_track, who, now)
            return merge, None, {"merge": merge.id, "into_track": into_track}
        return self._audited_change(who, "merge", change, job_id, track_id)

    def unmerge_track(self, job_id: int, track_id: int, who: str) -> Merge:
        """Undo the live merge of `track_id` (the row stays, marked undone); audit-logged."""
        def change(db: sqlite3.Connection, now: float) -> tuple[Merge, dict, dict]:
            live = [m for m in self._live_merges(db, job_id) if m.track_id == track_id]
            if not live:
                raise MergeRefused(f"track {track_id} is not merged into another track")
            db.execute("UPDATE merges SET undone_by = ?, undone_at = ? WHERE id = ?", (who, now, live[0].id))
            return (replace(live[0], undone_by=who, undone_at=now),
                    {"merge": live[0].id, "into_track": live[0].into_track}, {"merge": live[0].id, "into_track": None})
        return self._audited_change(who, "unmerge", change, job_id, track_id)

    @staticmethod
    def _live_merges(db: sqlite3.Connection, job_id: int) -> list[Merge]:
        rows = db.execute("SELECT * FROM merges WHERE job_id = ? AND undone_at IS NULL ORDER BY id", (job_id,))
        return [Merge(**dict(row)) for row in rows.fetchall()]

    def merges_for_job(self, job_id: int) -> list[Merge]:
        """The job's live merges, oldest first."""
        db = self._connect()
        try:
            return self._live_merges(db, job_id)
        finally:
            db.close()

    def person_groups(self, job_id: int) -> dict[int, list[int]]:
        """The job's tracks that reviewers merged into one person: {lowest track id: [every track id, sorted]},
        only for people of two or more tracks (a track not in any group is a person of its own)."""
        return _groups([(m.track_id, m.into_track) for m in self.merges_for_job(job_id)])

    def record_export(self, who: str, details: dict[str, Any]) -> None:
        db = self._connect()
        try:
            db.execute("INSERT INTO audit (at, who, action, after) VALUES (?,?,?,?)",
                       (time.time(), who, "export", json.dumps(details, sort_keys=True)))
        finally:
            db.close()

    def record_retry(self, who: str, job_id: int) -> None:
        """A reviewer asked the daemon to run a failed job's input again."""
        db = self._connect()
        try:
            db.execute("INSERT INTO audit (at, who, action, job_id, after) VALUES (?,?,?,?,?)",
                       (time.time(), who, "retry", job_id, json.dumps({"status": "retry requested"})))
        finally:
            db.close()

    def history(self, job_id: int, track_id: int | None = None) -> list[dict[str, Any]]:
        """Audit rows for a job (or one track), oldest first, with before/after decoded."""
        db = self._connect()
        try:
            if track_id is None:
                rows = db.execute("SELECT * FROM audit WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM audit WHERE job_id = ? AND track_id = ? ORDER BY id",
                                  (job_id, track_id)).fetchall()
        finally:
            db.close()
        return [{**dict(row), "before": json.loads(row["before"]) if row["before"] else None,
                 "after": json.loads(row["after"])} for row in rows]

