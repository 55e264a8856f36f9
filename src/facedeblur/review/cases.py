"""Named cases shared by every reviewer, and the login sessions, kept in the review database (store.py holds
their tables); a part of ReviewStore, which supplies `_connect` and `_audited_change`.

Every change to a case is one BEGIN IMMEDIATE transaction together with its audit row (action 'case'), so the
audit log says who made each case what it is. Sessions are stored by the SHA-256 of their random id: a copy of
the database is no login.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

CASE_NAME_LIMIT = 200
MAX_CASE_TRACKS = 150        # bounds one export's time and size (every face is decoded and drawn into the PDF)
SESSION_LIFETIME = 7 * 24 * 3600.0   # a login older than this is over, even in a browser left open
MAX_LIVE_SESSIONS = 10_000           # beyond this the oldest logins end (a flood of logins cannot fill the disk)


class CaseError(ValueError):
    """A case change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Case:
    id: int
    name: str
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float
    tracks: tuple[tuple[int, int], ...] = ()


def form_text(value: str, what: str, limit: int, lines: bool = False) -> str:
    """A text field as stored: trimmed, 1 to `limit` characters, printable; one line unless `lines`."""
    text = value.replace("\r\n", "\n").strip() if lines else " ".join(value.split())
    if not text:
        raise CaseError(f"{what} is empty: fill it in")
    if len(text) > limit:
        raise CaseError(f"{what} holds at most {limit} characters ({len(text)} given); shorten it")
    if any(not (char.isprintable() or lines and char == "\n") for char in text):
        raise CaseError(f"{what} holds a control character; type plain text")
    return text


def clean_case_name(name: str) -> str:
    return form_text(name, "the case name", CASE_NAME_LIMIT)


class CaseStoreMixin:
    """Named, shared cases in the review database; every change is one transaction with its audit row
    (ReviewStore._audited_change)."""

    def create_case(self, name: str, who: str) -> int:
        name = clean_case_name(name)

        def insert(db: sqlite3.Connection, now: float) -> tuple[int, None, dict[str, Any]]:
            case_id = db.execute("INSERT INTO cases (name, created_by, created_at, updated_by, updated_at) "
                                 "VALUES (?,?,?,?,?)", (name, who, now, who, now)).lastrowid
            return case_id, None, {"op": "create", "name": name, "case": case_id}
        return self._audited_change(who, "case", insert)

    def rename_case(self, case_id: int, name: str, who: str) -> None:
        name = clean_case_name(name)

        def update(db: sqlite3.Connection, now: float) -> tuple[None, None, dict[str, Any]]:
            old = db.execute("SELECT name FROM cases WHERE id = ?", (case_id,)).fetchone()
            if old is None:
                raise CaseError(f"there is no case {case_id}; pick one from the case list")
            db.execute("UPDATE cases SET name = ?, updated_by = ?, updated_at = ? WHERE id = ?",
                       (name, who, now, case_id))
            return None, None, {"op": "rename", "case": case_id, "name": name}
        self._audited_change(who, "case", update)

    def set_case_track(self, case_id: int, job_id: int, track_id: int, present: bool, who: str) -> bool:
        """Add (present=True) or remove a track; returns whether the case changed. Refused beyond
        MAX_CASE_TRACKS."""
        def change(db: sqlite3.Connection, now: float) -> tuple[bool, None, dict[str, Any]]:
            if db.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
                raise CaseError(f"there is no case {case_id}; pick one from the case list")
            if present:
                count = db.execute("SELECT COUNT(*) FROM case_tracks WHERE case_id = ?", (case_id,)).fetchone()[0]
                if count >= MAX_CASE_TRACKS:
                    raise CaseError(f"a case holds at most {MAX_CASE_TRACKS} tracks; export this one and start "
                                    "another")
                changed = db.execute("INSERT OR IGNORE INTO case_tracks (case_id, job_id, track_id, added_by, "
                                     "added_at) VALUES (?,?,?,?,?)", (case_id, job_id, track_id, who, now)).rowcount
            else:
                changed = db.execute("DELETE FROM case_tracks WHERE case_id = ? AND job_id = ? AND track_id = ?",
                                     (case_id, job_id, track_id)).rowcount
            if not changed:
                raise _Unchanged
            db.execute("UPDATE cases SET updated_by = ?, updated_at = ? WHERE id = ?", (who, now, case_id))
            return True, None, {"op": "add" if present else "remove", "case": case_id, "job": job_id,
                                "track": track_id}
        try:
            return self._audited_change(who, "case", change)
        except _Unchanged:
            return False

    def case(self, case_id: int) -> Case | None:
        db = self._connect()
        try:
            row = db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
            tracks = db.execute("SELECT job_id, track_id FROM case_tracks WHERE case_id = ? "
                                "ORDER BY job_id, track_id", (case_id,)).fetchall()
        finally:
            db.close()
        return Case(**dict(row), tracks=tuple((t[0], t[1]) for t in tracks)) if row is not None else None

    def cases(self) -> list[tuple[Case, int]]:
        """Every case with its number of tracks, the most recently changed first."""
        db = self._connect()
        try:
            rows = db.execute("SELECT cases.*, (SELECT COUNT(*) FROM case_tracks WHERE case_id = cases.id) AS n "
                              "FROM cases ORDER BY updated_at DESC, id DESC").fetchall()
        finally:
            db.close()
        return [(Case(**{k: row[k] for k in row.keys() if k != "n"}), row["n"]) for row in rows]

    def case_history(self, case_id: int) -> list[dict[str, Any]]:
        """The audit rows of one case (its changes and its exports), oldest first."""
        db = self._connect()
        try:
            rows = db.execute("SELECT id, at, who, action, after FROM audit WHERE action = 'case' AND "
                              "json_extract(after, '$.case') = ? UNION ALL SELECT id, at, who, action, after FROM "
                              "audit WHERE action = 'export' AND json_extract(after, '$.server_case') = ? ORDER BY id",
                              (case_id, case_id)).fetchall()
        finally:
            db.close()
        return [{**dict(row), "after": json.loads(row["after"])} for row in rows]

    # ---- login sessions ----------------------------------------------------------------------------------
    @staticmethod
    def _session_key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open_session(self, session_id: str, user: str) -> None:
        db = self._connect()
        try:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM login_sessions WHERE created_at < ?", (now - SESSION_LIFETIME,))
            db.execute("INSERT OR REPLACE INTO login_sessions (id_sha256, user, created_at) VALUES (?,?,?)",
                       (self._session_key(session_id), user, now))
            db.execute("DELETE FROM login_sessions WHERE id_sha256 IN (SELECT id_sha256 FROM login_sessions "
                       "ORDER BY created_at DESC LIMIT -1 OFFSET ?)", (MAX_LIVE_SESSIONS,))
            db.execute("COMMIT")
        finally:
            db.close()

    def session_user(self, session_id: str) -> str | None:
        db = self._connect()
        try:
            row = db.execute("SELECT user FROM login_sessions WHERE id_sha256 = ? AND created_at >= ?",
                             (self._session_key(session_id), time.time() - SESSION_LIFETIME)).fetchone()
        finally:
            db.close()
        return row["user"] if row is not None else None

    def close_session(self, session_id: str) -> None:
        db = self._connect()
        try:
            db.execute("DELETE FROM login_sessions WHERE id_sha256 = ?", (self._session_key(session_id),))
        finally:
            db.close()


class _Unchanged(Exception):
    """Adding a track already in the case, or removing one not in it: no audit row."""
