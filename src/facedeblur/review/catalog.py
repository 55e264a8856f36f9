"""What the server shows: the daemon's journal read-only, and each job's manifest read from the outbox.

The journal is opened with `mode=ro` for every request, so the server can never change it and always sees
what the daemon committed a moment ago (WAL). A job's output folder is only trusted when the journal puts it
directly inside the configured outbox; every file in it is then opened through safe_files.
"""
from __future__ import annotations

import calendar
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..daemon.journal import JOURNAL_FILE, STATES, JournalReader, from_db, inbox_name, shown_error
from ..daemon.progress import describe_progress, job_progress
from ..safe_text import display_name
from . import safe_files

MANIFEST_LIMIT = 256 * 1024 * 1024   # a manifest of a very long clip is large, but never this large
MAX_ROW_ID = 2 ** 63 - 1               # SQLite's largest integer
THUMBNAIL_FACES = 4                   # faces shown per job in the list
ROOT_FOLDER = "(inbox root)"         # the folder filter's name for inputs dropped straight into an inbox
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadQuery(ValueError):
    """A list filter that cannot be understood; its message says which one and what is expected."""


@dataclass
class JobFilter:
    status: str = ""
    folder: str | None = None   # None: any folder; "" : the inbox root
    date_from: str = ""
    date_to: str = ""
    search: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args: Any) -> "JobFilter":
        status = args.get("status", "").strip()
        if status and status not in STATES:
            raise BadQuery(f"status {status!r} is not one of {', '.join(STATES)}")
        folder = args.get("folder")
        folder = None if folder in (None, "", "*") else ("" if folder == ROOT_FOLDER else folder)
        dates = {}
        for key in ("from", "to"):
            value = args.get(key, "").strip()
            if value and not _DATE.match(value):
                raise BadQuery(f"date {key} {value!r} is not YYYY-MM-DD (UTC)")
            if value:
                try:
                    time.strptime(value, "%Y-%m-%d")
                except ValueError:
                    raise BadQuery(f"date {key} {value!r} is not a calendar date (YYYY-MM-DD, UTC)") from None
            dates[key] = value
        try:
            page = max(1, int(args.get("page", "1") or 1))
        except ValueError:
            raise BadQuery(f"page {args.get('page')!r} is not a whole number") from None
        return cls(status=status, folder=folder, date_from=dates["from"], date_to=dates["to"],
                   search=args.get("q", "").strip()[:200], page=page)

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.status:
            clauses.append("state = ?")
            params.append(self.status)
        if self.folder is not None:
            if self.folder == "":
                clauses.append("instr(rel_path, '/') = 0")
            else:
                clauses.append("rel_path LIKE ? ESCAPE '\\'")
                params.append(_like_escape(self.folder) + "/%")
        if self.date_from:
            clauses.append("created_at >= ?")
            params.append(_utc_day_start(self.date_from))
        if self.date_to:
            clauses.append("created_at < ?")
            params.append(_utc_day_start(self.date_to) + 86400)   # the whole 'to' day is included
        if self.search:
            clauses.append("rel_path LIKE ? ESCAPE '\\'")
            params.append("%" + _like_escape(self.search) + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utc_day_start(day: str) -> float:
    return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))


def folder_of(rel_path: str) -> str:
    return rel_path.split("/", 1)[0] if "/" in rel_path else ""


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    folders: list[str] = field(default_factory=list)


class Catalog:
    def __init__(self, outbox: Path, state: Path):
        self.outbox = Path(outbox)
        self.journal_path = Path(state) / JOURNAL_FILE
        self._manifests: dict[int, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._manifest_lock = threading.Lock()

    # ---- the journal --------------------------------------------------------------------------------------
    def list_jobs(self, query: JobFilter, page_size: int) -> JobPage:
        where, params = query.where()
        condition = where.removeprefix(" WHERE ")
        with JournalReader(self.journal_path.parent, verify=False) as journal:
            total = journal.count(condition, params)
            pages = max(1, -(-total // page_size))
            page = min(query.page, pages)
            rows = journal.jobs(condition, params, newest_first=True, limit=page_size, offset=(page - 1) * page_size)
            folders = sorted(set(journal.folders()), key=lambda name: (name != "", name))
        return JobPage([self._job(row) for row in rows], total, page, pages, folders)

    def job(self, job_id: int) -> dict[str, Any] | None:
        if not 0 <= job_id <= MAX_ROW_ID:
            return None   # SQLite cannot even look it up (OverflowError): no such job
        with JournalReader(self.journal_path.parent, verify=False) as journal:
            row = journal.job(job_id)
        return self._job(row) if row is not None else None

    def published(self) -> list[dict[str, Any]]:
        """Every done job whose output still exists, as job() gives it (the person-search index follows these)."""
        with JournalReader(self.journal_path.parent, verify=False) as journal:
            return [self._job(row) for row in journal.published()]

    def _job(self, row: dict[str, Any]) -> dict[str, Any]:
        job = {key: from_db(row[key]) for key in row.keys()}
        if "tracks" not in job:
            job["tracks"] = job.get("faces")   # journals before the tracks column kept the track count in faces
        job["folder"] = folder_of(job["rel_path"])
        job["name"] = job["rel_path"].rsplit("/", 1)[-1]
        job["shown_name"] = display_name(job["rel_path"])
        job["inbox_name"] = inbox_name(job.get("inbox") or "", job["rel_path"])
        job["shown_error"] = shown_error(job.get("error"), job.get("inbox") or "", job["rel_path"])
        job["progress"] = job_progress(job)
        job["progress_text"] = describe_progress(job["progress"]) if job["state"] == "running" else ""
        job["output_name"] = self.output_name(job)
        return job

    def output_name(self, job: dict[str, Any]) -> str | None:
        """The job's folder name when the journal puts it directly inside the outbox and it still exists."""
        output = job.get("output")
        if not output or job.get("output_deleted_at") or job.get("state") != "done":
            return None
        folder = Path(output)
        if os.path.normpath(folder.parent) != os.path.normpath(self.outbox) or folder.name in ("", ".", ".."):
            return None   # the journal was moved or edited: never follow it out of the outbox
        return folder.name

    # ---- the outbox ---------------------------------------------------------------------------------------
    def open_output_file(self, job: dict[str, Any], relative: str) -> int:
        name = job.get("output_name")
        if name is None:
            raise safe_files.NotServable("this job has no published output")
        return safe_files.open_below(self.outbox, [name, *safe_files.checked_parts(relative)])

    def manifest(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The job's manifest.json, parsed once per version of the file (long clips have large manifests)."""
        name = job.get("output_name")
        if name is None:
            return None
        try:
            fd = safe_files.open_below(self.outbox, [name, "manifest.json"])
        except safe_files.NotServable:
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            version = (info.st_mtime_ns, info.st_size)
            with self._manifest_lock:
                cached = self._manifests.get(job["id"])
            if cached and cached[0] == version:
                return cached[1]
            if info.st_size > MANIFEST_LIMIT:
                return None
            try:
                manifest = json.loads(handle.read())
            except (ValueError, UnicodeDecodeError):
                return None
        if not isinstance(manifest, dict) or not manifest_is_well_formed(manifest):
            return None
        with self._manifest_lock:
            if len(self._manifests) > 256:
                self._manifests.clear()
            self._manifests[job["id"]] = (version, manifest)
        return manifest

    def face_tracks(self, job: dict[str, Any]) -> list[str]:
        """The first THUMBNAIL_FACES track folders under faces/, in track order (a listing: reading a manifest
        per row of the list is slow)."""
        name = job.get("output_name")
        if name is None:
            return []
        tracks = [t for t in safe_files.list_below(self.outbox, [name, "faces"]) if t.isdigit()]
        return sorted(tracks, key=int)[:THUMBNAIL_FACES]

    def thumbnail_parts(self, job: dict[str, Any], face: int = 0) -> list[str] | None:
        """faces/<track>/<first side-by-side image> of the face-th track folder."""
        tracks = self.face_tracks(job)
        if face >= len(tracks):
            return None
        images = [f for f in safe_files.list_below(self.outbox, [job["output_name"], "faces", tracks[face]])
                  if f.endswith("-side-by-side.png")]
        return [job["output_name"], "faces", tracks[face], images[0]] if images else None


_OBJECT_FIELDS = ("outputs", "summary", "input", "model", "tool", "settings", "detector")


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def manifest_is_well_formed(manifest: dict[str, Any]) -> bool:
    """True when the fields the pages and the report read have the types manifest-schema.md gives them; a
    manifest edited into other types (a track id as a string, tracks as an object) is shown as unreadable
    rather than breaking the page."""
    if any(not isinstance(manifest.get(key, {}), dict) for key in _OBJECT_FIELDS):
        return False
    if not isinstance(manifest.get("tracks", []), list):
        return False
    for track in manifest.get("tracks", []):
        if not isinstance(track, dict) or isinstance(track.get("id"), bool) or not isinstance(track.get("id"), int):
            return False
        if not 0 <= track["id"] <= MAX_ROW_ID or not all(_number(track.get(k)) for k in ("start_time", "end_time")):
            return False
        for key in ("best_frames", "frames"):
            entries = track.get(key, [])
            if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
                return False
        for best in track.get("best_frames", []):
            if any(not isinstance(best.get(role, ""), str) for role in ("original", "restored", "side_by_side")):
                return False
    return True
