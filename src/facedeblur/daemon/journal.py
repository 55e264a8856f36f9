"""The durable job journal: one SQLite file (WAL) in the state folder, the daemon's only source of truth.

Every input the daemon takes gets one row, identified by (path, size, mtime_ns): the same file seen again
by a rescan is recognised and never queued twice, while a file overwritten with new content at the same
path becomes a new job. State moves queued -> running -> done | failed (or duplicate, when the same
content was already processed; or superseded, when the file changed after it was taken and its new
content became a newer job). Each transition is one committed transaction, so after a crash or
`kill -9` the journal says exactly which jobs were running and must be re-run.

Only the daemon's main thread writes; `facedeblur status` reads concurrently, which WAL allows.

Paths are stored losslessly: a name that is valid UTF-8 as TEXT, any other (b'caf\xe9.mp4', which Python
holds as 'caf\udce9.mp4') as its raw bytes in a BLOB; reading turns both back into the same str.
"""
from __future__ import annotations

import errno
import os
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

JOURNAL_FILE = "journal.sqlite3"
STATES = ("queued", "running", "done", "failed", "duplicate", "superseded")
FINISHED_STATES = ("done", "failed", "duplicate", "superseded")

JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    path          TEXT NOT NULL,          -- absolute path of the input (file or frame folder)
    inbox         TEXT NOT NULL,          -- the inbox it was found in
    rel_path      TEXT NOT NULL,          -- path relative to that inbox (recorded in the manifest)
    kind          TEXT NOT NULL,          -- 'file' or 'frames' (a folder of frames)
    size          INTEGER NOT NULL,       -- bytes (sum over the frames for a folder)
    mtime_ns      INTEGER NOT NULL,       -- newest mtime (ns)
    sha256        TEXT,                   -- content hash; NULL when the input could not be read
    state         TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','duplicate','superseded')),
    attempts      INTEGER NOT NULL DEFAULT 0,   -- attempts that failed or are running
    interruptions INTEGER NOT NULL DEFAULT 0,   -- runs cut short by a daemon crash or shutdown (not the input's fault)
    not_before    REAL NOT NULL DEFAULT 0,      -- earliest time to retry (back-off after a failure)
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    seconds       REAL,                   -- processing time of the successful run
    frames        INTEGER,
    faces         INTEGER,                -- faces restored (one per face per frame)
    tracks        INTEGER,                -- people (tracks) found
    output        TEXT,                   -- published output folder
    output_deleted_at REAL,               -- set when retention removed the output
    duplicate_of  INTEGER REFERENCES jobs(id),   -- for 'duplicate': the job with the same content
    superseded_by INTEGER REFERENCES jobs(id),   -- for 'superseded': the job of the file's newer content
    failed_copy   TEXT,                   -- where the input went in failed/
    error         TEXT,                   -- last error, one line
    worker_pid    INTEGER,
    dispatches    INTEGER NOT NULL DEFAULT 0,   -- times the job was started; the running one is attempt number N
    progress_stage TEXT,                  -- the running attempt's newest report (daemon/progress.py): stage,
    progress_done  INTEGER,               -- frames done in that stage,
    progress_total INTEGER,               -- frames the stage has (NULL: not known),
    progress_at    REAL                   -- and when it came
)"""

SCHEMA = JOBS_TABLE + """;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_identity ON jobs (path, size, mtime_ns);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs (sha256, state);
CREATE INDEX IF NOT EXISTS jobs_path ON jobs (path, state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_at);
"""


PROGRESS_COLUMNS = (("progress_stage", "TEXT"), ("progress_done", "INTEGER"), ("progress_total", "INTEGER"),
                    ("progress_at", "REAL"))
PATH_COLUMNS = ("path", "inbox", "rel_path", "output", "failed_copy")
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class JournalUnwritable(Exception):
    """A journal write failed for a reason outside the journal (state disk full, I/O error): the daemon pauses
    intake and dispatch and retries until the write works again."""


def is_damaged(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name.startswith(_DAMAGED) or "malformed" in text or "not a database" in text


def damaged_message(path: Path, exc: BaseException) -> str:
    return (f"the job journal {path} is damaged ({exc}); stop the daemon, keep a backup copy "
            f"(cp {path} {path}.bak), then recover it (sqlite3 {path}.bak .recover | sqlite3 {path}.recovered "
            f"&& mv {path}.recovered {path}) or move it away to start a new journal (every input still in the inbox "
            "is then processed again), and start the daemon")


def journal_error(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """The exception to raise for a SQLite error: damaged -> a one-line FacedeblurError; full/I/O -> unwritable."""
    from ..errors import FacedeblurError
    if is_damaged(exc):
        return FacedeblurError(damaged_message(path, exc))
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY")) or \
            "disk is full" in str(exc) or "disk i/o" in str(exc).lower():
        return JournalUnwritable(f"{path}: {exc}")
    return exc


def to_db(path: str | None) -> str | bytes | None:
    """A path for SQLite: text when it is UTF-8, else its exact bytes (sqlite3 cannot bind lone surrogates)."""
    if path is None:
        return None
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def from_db(value: Any) -> Any:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def message_to_db(text: str | None) -> str | None:
    """An error message (it may quote a file name) as storable text."""
    from ..safe_text import encodable
    return None if text is None else encodable(text)


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: from_db(row[key]) if key in PATH_COLUMNS else row[key] for key in row.keys()}


def inbox_name(inbox: str, rel_path: str) -> str:
    """How an input is named to a person: its inbox folder's name and its path inside it ('inbox/cam2/x.mp4'),
    never the daemon's staging copy or the whole absolute path. Printable (see safe_text.display_name)."""
    from ..safe_text import display_name
    folder = os.path.basename(os.path.normpath(inbox)) if inbox else ""
    return display_name(f"{folder}/{rel_path}" if folder else rel_path)


# A held copy's path in an error recorded before errors named inputs by inbox_name (".../.staging/NAME.input/x.mp4").
_HELD_COPY = re.compile(r"(?:/[^\s:]*)?/\.staging/[^/\s]+\.input/[^:]+(?=:)")


def shown_error(error: str | None, inbox: str, rel_path: str) -> str:
    """A job's recorded error as shown to a person: printable, and naming the input by inbox_name even where
    an older daemon wrote the path of its staging copy or the absolute inbox path."""
    from ..safe_text import encodable
    if not error:
        return ""
    text = encodable(error)
    shown = inbox_name(inbox, rel_path)
    text = _HELD_COPY.sub(lambda _: shown, text)
    absolute = encodable(os.path.join(inbox, rel_path)) if inbox else ""
    return text.replace(absolute, shown) if absolute else text


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    inbox: str
    rel_path: str
    kind: str
    size: int
    mtime_ns: int
    sha256: str | None
    state: str
    attempts: int
    interruptions: int
    output: str | None
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        values = row_dict(row)
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


# The first folder of a relative path ('' for an input directly in the inbox), as SQL over rel_path.
FOLDER_OF_SQL = "CASE WHEN instr(rel_path, '/') > 0 THEN substr(rel_path, 1, instr(rel_path, '/') - 1) ELSE '' END"


class JobQueries:
    """The reads that both the daemon's Journal and a JournalReader make, over `self.db`."""
    db: sqlite3.Connection

    def _check_and_identify(self, verify: bool = True) -> None:
        self.db.row_factory = sqlite3.Row
        check = self.db.execute("PRAGMA quick_check(1)").fetchone()[0] if verify else "ok"
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
        row = self.db.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone() \
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() else None
        self.journal_id: str | None = row["value"] if row else None

    def close(self) -> None:
        self.db.close()

    def get(self, job_id: int) -> Job:
        return Job.from_row(self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    # ---- retention and the review index ------------------------------------------------------------------
    def published(self) -> Iterator[dict[str, Any]]:
        """Done jobs whose output folder still exists in the journal's view, newest first."""
        return iter(self._rows(
            "SELECT * FROM jobs WHERE state='done' AND output IS NOT NULL AND output_deleted_at IS NULL "
            "ORDER BY finished_at DESC, id DESC"))

    # ---- status -------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        for row in self.db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def running(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM jobs WHERE state='running' ORDER BY started_at")

    def recent_failures(self, limit: int) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM jobs WHERE state='failed' ORDER BY finished_at DESC LIMIT ?", (limit,))

    def retrying_count(self) -> int:
        return self._rows("SELECT COUNT(*) AS n FROM jobs WHERE state='queued' AND attempts>0")[0]["n"]

    def done_since(self, since: float) -> dict[str, Any]:
        """Jobs, frames, faces and processing seconds of the jobs done since `since` (epoch seconds)."""
        row = self._rows("SELECT COUNT(*) AS jobs, SUM(frames) AS frames, SUM(faces) AS faces, "
                         "SUM(seconds) AS seconds FROM jobs WHERE state='done' AND finished_at>=?", (since,))[0]
        return {"jobs": row["jobs"], "frames": row["frames"] or 0, "faces": row["faces"] or 0,
                "seconds": row["seconds"] or 0.0}

    def last_done_at(self) -> float | None:
        return self._rows("SELECT MAX(finished_at) AS t FROM jobs WHERE state='done'")[0]["t"]

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [row_dict(row) for row in self.db.execute(sql, params).fetchall()]


class JournalReader(JobQueries):
    """A read-only view of a journal, for `facedeblur status`, the review server, tests and scripts: it never
    writes, and (mode=ro still reads the WAL) sees what the daemon committed a moment ago."""

    def __init__(self, state_dir: Path, verify: bool = True):
        """`verify`: run SQLite's quick check first (a page server that opens it per request skips it)."""
        self.path = Path(state_dir) / JOURNAL_FILE
        if not self.path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no job journal here (yet)", str(self.path))
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            self._check_and_identify(verify)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if is_damaged(exc):
                from ..errors import FacedeblurError
                raise FacedeblurError(damaged_message(self.path, exc)) from None
            raise

    def __enter__(self) -> "JournalReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def jobs(self, where: str = "", params: tuple[Any, ...] | list[Any] = (), newest_first: bool = False,
             limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
        """Rows of the jobs table as dicts (paths as str); `where`: an SQL condition over its columns, or ''."""
        order = "DESC" if newest_first else "ASC"
        return self._rows(f"SELECT * FROM jobs{' WHERE ' + where if where else ''} ORDER BY id {order} "
                          "LIMIT ? OFFSET ?", (*params, limit, offset))

    def count(self, where: str = "", params: tuple[Any, ...] | list[Any] = ()) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM jobs{' WHERE ' + where if where else ''}",
                                   tuple(params)).fetchone()[0])

    def job(self, job_id: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM jobs WHERE id=?", (job_id,))
        return rows[0] if rows else None

    def folders(self) -> list[str]:
        """The first folder of every input's relative path ('' for inputs directly in an inbox)."""
        return [from_db(r[0]) for r in self.db.execute(f"SELECT DISTINCT {FOLDER_OF_SQL} FROM jobs")]

    def integrity(self) -> str:
        """'ok', or SQLite's first problem found by a full integrity check."""
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])


def jobs_so_far(state_dir: Path) -> list[dict[str, Any]]:
    """Every job row, oldest first, for a watcher outside the daemon (tests, benchmarks): [] before the daemon
    has created its journal, or while it is creating the tables."""
    try:
        with JournalReader(state_dir) as journal:
            return journal.jobs()
    except (FileNotFoundError, sqlite3.OperationalError):
        return []


class Journal(JobQueries):
    """The daemon's journal: the only writer (its main thread)."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / JOURNAL_FILE
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            error = journal_error(self.path, exc)
            if isinstance(error, JournalUnwritable):
                from ..errors import FacedeblurError
                raise FacedeblurError(f"the job journal {self.path} cannot be opened for writing ({exc}); free "
                                      "space on its disk or fix its permissions, then start again") from None
            raise error from None

    def _open(self) -> None:
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a job marked done survives a power cut, not only a process crash.
        self.db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self.db.executescript(SCHEMA)
        self._add_columns()
        # Identifies this journal in every manifest it publishes: a job id alone is not unique across two
        # daemons sharing an outbox, nor across a journal moved away to start afresh.
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_id', ?)", (uuid.uuid4().hex,))
        self._check_and_identify()

    def _migrate(self) -> None:
        """Journals written before 'superseded' existed: the CHECK constraint is part of the table, so the
        table is rebuilt once (same rows, same ids) inside one transaction."""
        table = self.db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone()
        if table is None or "superseded_by" in table[0]:
            return
        old_columns = [r[1] for r in self.db.execute("PRAGMA table_info(jobs)")]
        create_jobs = JOBS_TABLE.replace("CREATE TABLE IF NOT EXISTS jobs", "CREATE TABLE jobs_new")
        columns = ", ".join(old_columns)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(create_jobs)
            self.db.execute(f"INSERT INTO jobs_new ({columns}) SELECT {columns} FROM jobs")
            self.db.execute("DROP TABLE jobs")
            self.db.execute("ALTER TABLE jobs_new RENAME TO jobs")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _add_columns(self) -> None:
        """Columns added after the table's last rebuild: a plain ALTER TABLE, once."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        if "dispatches" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN dispatches INTEGER NOT NULL DEFAULT 0")
        for column, kind in PROGRESS_COLUMNS:
            if column not in columns:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            with self.db:  # one committed transaction per call
                return self.db.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            error = journal_error(self.path, exc)
            if error is exc:
                raise
            raise error from exc

    def writable(self) -> bool:
        """True when the state disk takes a small write again (probe beside the journal, fsynced)."""
        probe = self.path.with_name(f".probe-{os.getpid()}")
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
            return True
        except OSError:
            return False
        finally:
            try:
                probe.unlink()
            except OSError:
                pass

    def requeue_orphans(self, held: set[int]) -> list[int]:
        """Jobs the journal shows running that no worker holds (their result was lost while the journal could
        not be written) go back to the queue, not counted against the input; a published one is then recognised
        by its manifest and marked done without being processed again."""
        rows = self.db.execute("SELECT id FROM jobs WHERE state='running'").fetchall()
        orphans = [r["id"] for r in rows if r["id"] not in held]
        for job_id in orphans:
            self.interrupt(job_id)
        return orphans

    # ---- intake -------------------------------------------------------------------------------------------
    def known(self, path: str, size: int, mtime_ns: int) -> bool:
        row = self.db.execute("SELECT 1 FROM jobs WHERE path=? AND size=? AND mtime_ns=? LIMIT 1",
                              (to_db(path), size, mtime_ns)).fetchone()
        return row is not None

    def done_with_hash(self, sha256: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE sha256=? AND state IN ('done','queued','running') "
                              "ORDER BY id LIMIT 1", (sha256,)).fetchone()
        return Job.from_row(row) if row else None

    def add(self, *, path: str, inbox: str, rel_path: str, kind: str, size: int, mtime_ns: int,
            sha256: str | None, state: str = "queued", duplicate_of: int | None = None,
            error: str | None = None) -> int:
        now = time.time()
        cursor = self._write(
            "INSERT INTO jobs (path, inbox, rel_path, kind, size, mtime_ns, sha256, state, created_at, "
            "duplicate_of, error, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (to_db(path), to_db(inbox), to_db(rel_path), kind, size, mtime_ns, sha256, state, now, duplicate_of,
             message_to_db(error),
             now if state != "queued" else None))
        return int(cursor.lastrowid)

    # ---- scheduling ---------------------------------------------------------------------------------------
    def next_queued(self, limit: int, exclude: set[int] = frozenset()) -> list[Job]:
        rows = self.db.execute("SELECT * FROM jobs WHERE state='queued' AND not_before<=? ORDER BY id LIMIT ?",
                               (time.time(), limit + len(exclude))).fetchall()
        return [Job.from_row(r) for r in rows if r["id"] not in exclude][:limit]

    def mark_running(self, job_id: int, pid: int) -> int:
        """The job's new attempt number: a remote worker's result counts only for the attempt still running."""
        self._write("UPDATE jobs SET state='running', attempts=attempts+1, dispatches=dispatches+1, started_at=?, "
                    "worker_pid=?, progress_stage=NULL, progress_done=NULL, progress_total=NULL, progress_at=NULL "
                    "WHERE id=?", (time.time(), pid, job_id))
        return int(self.db.execute("SELECT dispatches FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    def record_progress(self, job_id: int, attempt: int, stage: str, done: int, total: int | None) -> bool:
        """Store a running attempt's newest progress report; False (nothing written) when that attempt is not
        the one running, so a late report of an earlier attempt never shows."""
        cursor = self._write("UPDATE jobs SET progress_stage=?, progress_done=?, progress_total=?, progress_at=? "
                             "WHERE id=? AND state='running' AND dispatches=?",
                             (stage, done, total, time.time(), job_id, attempt))
        return cursor.rowcount == 1

    def live_attempt(self, job_id: int) -> int | None:
        """The attempt number of the job's running dispatch; None when it is not running (or unknown)."""
        row = self.db.execute("SELECT state, dispatches FROM jobs WHERE id=?", (job_id,)).fetchone()
        return int(row[1]) if row is not None and row[0] == "running" else None

    def running_attempts(self) -> dict[int, int]:
        """job id -> live attempt number, for every running job."""
        return {int(r[0]): int(r[1]) for r in self.db.execute("SELECT id, dispatches FROM jobs WHERE state='running'")}

    def mark_done(self, job_id: int, output: str, seconds: float | None, frames: int | None,
                  faces: int | None, tracks: int | None = None) -> None:
        self._write("UPDATE jobs SET state='done', finished_at=?, seconds=?, frames=?, faces=?, tracks=?, output=?, "
                    "error=NULL, worker_pid=NULL WHERE id=?",
                    (time.time(), seconds, frames, faces, tracks, to_db(output), job_id))

    def mark_retry(self, job_id: int, error: str, delay: float, count_attempt: bool = True) -> None:
        """Back to the queue after a failed run; `count_attempt=False` for failures that are not the input's."""
        self._write("UPDATE jobs SET state='queued', error=?, not_before=?, worker_pid=NULL, "
                    "attempts=attempts-? WHERE id=?",
                    (message_to_db(error), time.time() + delay, 0 if count_attempt else 1, job_id))

    def mark_failed(self, job_id: int, error: str, failed_copy: str | None) -> None:
        self._write("UPDATE jobs SET state='failed', finished_at=?, error=?, failed_copy=?, worker_pid=NULL "
                    "WHERE id=?", (time.time(), message_to_db(error), to_db(failed_copy), job_id))

    def requeue_interrupted(self) -> list[Job]:
        """After a crash or abandoned shutdown: jobs left 'running' go back to the queue.

        The interrupted attempt is not counted against the input (a power cut is not the clip's fault);
        `interruptions` is, so a clip that crashes the whole machine every time still ends in failed/.
        """
        rows = self.db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
        self._write("UPDATE jobs SET state='queued', attempts=MAX(attempts-1,0), "
                    "interruptions=interruptions+1, worker_pid=NULL WHERE state='running'")
        return [Job.from_row(r) for r in rows]

    def interrupt(self, job_id: int) -> None:
        self._write("UPDATE jobs SET state='queued', attempts=MAX(attempts-1,0), interruptions=interruptions+1, "
                    "worker_pid=NULL WHERE id=?", (job_id,))

    def duplicates_of(self, job_id: int) -> list[Job]:
        rows = self.db.execute("SELECT * FROM jobs WHERE state='duplicate' AND duplicate_of=? ORDER BY id",
                               (job_id,)).fetchall()
        return [Job.from_row(r) for r in rows]

    def supersede(self, job_id: int, reason: str, by: int | None = None) -> None:
        self._write("UPDATE jobs SET state='superseded', finished_at=?, error=?, superseded_by=?, worker_pid=NULL "
                    "WHERE id=?", (time.time(), message_to_db(reason), by, job_id))

    def queued_at(self, path: str) -> list[Job]:
        """Jobs still waiting for an input path (a newer version of the file supersedes them)."""
        rows = self.db.execute("SELECT * FROM jobs WHERE path=? AND state='queued' ORDER BY id",
                               (to_db(path),)).fetchall()
        return [Job.from_row(r) for r in rows]

    def mark_output_deleted(self, job_id: int) -> None:
        self._write("UPDATE jobs SET output_deleted_at=? WHERE id=?", (time.time(), job_id))
