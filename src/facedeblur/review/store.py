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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import FacedeblurError
from .cases import CaseStoreMixin

REVIEW_FILE = "review.sqlite3"
MARK_STATES = ("unmarked", "reviewed", "flagged")
NOTE_LIMIT = 4000

SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    job_id     INTEGER NOT NULL,
    track_id   INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('unmarked','reviewed','flagged')),
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
    action   TEXT NOT NULL,               -- 'mark' or 'export'
    job_id   INTEGER,
    track_id INTEGER,
    before   TEXT,                        -- JSON of the mark before (null: none yet)
    after    TEXT NOT NULL                -- JSON of the mark after, or of the export
);
CREATE INDEX IF NOT EXISTS audit_track ON audit (job_id, track_id, id);
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
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._mark(db.execute("SELECT * FROM marks WHERE job_id = ? AND track_id = ?",
                                                (job_id, track_id)).fetchone(), job_id, track_id)
                if current.version != seen_version:
                    raise StaleMark(current)
                now = time.time()
                changed = Mark(job_id, track_id, status, note, current.version + 1, who, now)
                db.execute("INSERT INTO marks (job_id, track_id, status, note, version, updated_by, updated_at) "
                           "VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, track_id) DO UPDATE SET "
                           "status = excluded.status, note = excluded.note, version = excluded.version, "
                           "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                           tuple(asdict(changed).values()))
                db.execute("INSERT INTO audit (at, who, action, job_id, track_id, before, after) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (now, who, "mark", job_id, track_id,
                            json.dumps(current.content()) if current.version else None,
                            json.dumps(changed.content())))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()
        return changed

    def record_export(self, who: str, details: dict[str, Any]) -> None:
        db = self._connect()
        try:
            db.execute("INSERT INTO audit (at, who, action, after) VALUES (?,?,?,?)",
                       (time.time(), who, "export", json.dumps(details, sort_keys=True)))
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

