"""The person-search index: every published track's identity vector, in STATE/faces.sqlite3.

SQLite is the whole store: a job's tracks go in (or out) in one transaction, so a crash leaves the index as it
was before or after that job, never half of it; vectors are raw little-endian float32 blobs (nothing is ever
unpickled); and the index can be rebuilt at any time from the manifests (`sync_with_journal` adds what is
missing and removes what retention deleted).

A search compares the query with every stored vector (exact cosine similarity) while the store is small. A
long-running searcher (the review server) with APPROXIMATE_FROM_ROWS or more faces hashes them instead (faiss
IndexLSH + IndexRefineFlat): every face gets a short binary code, a search compares codes (a sixteenth of the
bytes) to pick candidates, and re-ranks those by their exact similarity. The similarities it returns are exact;
what it can miss is a match whose code happens to differ more than the candidates' (how often, measured on the
hardest data, in docs/BENCHMARKS.md, "Person search"). The vectors are read into memory once per process and
refreshed when the store changes, reading only the new rows when nothing was removed (new rows are hashed and
appended; a removal rebuilds). `facedeblur search`, one query per process, always searches exactly: hashing
would cost more than the one scan.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FacedeblurError
from . import DEFAULT_RESULTS
from .identity_vector import DIMENSIONS, vector_from_track

INDEX_FILE = "faces.sqlite3"
VECTOR_BYTES = DIMENSIONS * 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,   -- only grows: rows above the loaded maximum are the new ones
    job_id    INTEGER NOT NULL,
    track_id  INTEGER NOT NULL,
    vector    BLOB NOT NULL CHECK (length(vector) = 512),   -- 128 float32, little-endian, unit length
    original  TEXT,                                -- the track's best input crop, relative to the job's folder
    restored  TEXT,                                -- the same frame restored
    UNIQUE (job_id, track_id)
);
CREATE TABLE IF NOT EXISTS jobs (                  -- every job looked at, with or without faces
    job_id     INTEGER PRIMARY KEY,
    faces      INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('removals', 0);
"""


@dataclass(frozen=True)
class Hit:
    job_id: int
    track_id: int
    similarity: float
    original: str | None
    restored: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job_id, "track": self.track_id, "similarity": round(self.similarity, 4),
                "original": self.original, "restored": self.restored}


@dataclass
class _Loaded:
    removals: int = -1
    max_id: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))          # the faces table's row ids
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))   # (job_id, track_id) per row
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, DIMENSIONS), np.float32))   # exact search
    hashed: "_HashedVectors | None" = None   # approximate search (then `vectors` is empty)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class FaceIndex:
    """STATE/faces.sqlite3. Safe to share between threads; several processes may read and write it (WAL)."""

    def __init__(self, state: Path, create: bool = True, approximate_from_rows: int | None = None):
        """`approximate_from_rows`: hash the faces (and search their codes first) once this many are stored (a
        process that searches many times passes APPROXIMATE_FROM_ROWS; needs faiss-cpu, in the `serve` extra);
        None: always exact."""
        self.path = Path(state) / INDEX_FILE
        self.approximate_from_rows = approximate_from_rows
        if not create and not self.path.is_file():
            raise FacedeblurError(f"no person-search index at {self.path}; it is made by the daemon as jobs "
                                  "finish (or by `facedeblur serve`): check daemon.state")
        self._lock = threading.Lock()
        self._loaded = _Loaded()
        self._read_connection: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, timeout=30)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise FacedeblurError(f"{self.path}: cannot open the person-search index ({exc}); delete it and it "
                                  "is rebuilt from the job manifests") from None

    def _connect(self, write: bool = True) -> "_Transaction":
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        return _Transaction(db, write)

    # ---- writing ------------------------------------------------------------------------------------------
    def add_job(self, job_id: int, manifest: dict[str, Any] | None) -> int:
        """Replace the job's tracks with those of its manifest (None: a job without a readable manifest, kept
        as looked-at with no faces); returns how many tracks had an identity vector."""
        rows = []
        for track in (manifest or {}).get("tracks") or []:
            vector = vector_from_track(track)
            if vector is None:
                continue
            best = (track.get("best_frames") or [{}])[0]
            rows.append((job_id, track["id"], _blob(vector), _text(best.get("original")), _text(best.get("restored"))))
        with self._connect() as db:
            removed = db.execute("DELETE FROM faces WHERE job_id=?", (job_id,)).rowcount
            db.executemany("INSERT INTO faces (job_id, track_id, vector, original, restored) VALUES (?,?,?,?,?)", rows)
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?)", (job_id, len(rows), time.time()))
            if removed:
                db.execute("UPDATE meta SET value = value + 1 WHERE key='removals'")
        return len(rows)

    def remove_jobs(self, job_ids: Iterable[int]) -> None:
        ids = [(int(j),) for j in job_ids]
        if not ids:
            return
        with self._connect() as db:
            db.executemany("DELETE FROM faces WHERE job_id=?", ids)
            db.executemany("DELETE FROM jobs WHERE job_id=?", ids)
            db.execute("UPDATE meta SET value = value + 1 WHERE key='removals'")

    def indexed_jobs(self) -> set[int]:
        with self._connect(write=False) as db:
            return {row[0] for row in db.execute("SELECT job_id FROM jobs")}

    # ---- reading ------------------------------------------------------------------------------------------
    def size(self) -> int:
        """Tracks stored (counted by SQLite: the vectors are not read)."""
        with self._connect(write=False) as db:
            return int(db.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def vector_of(self, job_id: int, track_id: int) -> np.ndarray | None:
        with self._connect(write=False) as db:
            row = db.execute("SELECT vector FROM faces WHERE job_id=? AND track_id=?", (job_id, track_id)).fetchone()
        return np.frombuffer(row[0], "<f4").astype(np.float32) if row else None

    def search(self, vector: np.ndarray, limit: int = DEFAULT_RESULTS,
               exclude: tuple[int, int] | None = None, exclude_job: int | None = None) -> list[Hit]:
        """The `limit` stored tracks most similar to `vector` (unit length), best first."""
        loaded = self._current()
        if not len(loaded.keys):
            return []
        excluded = np.zeros(len(loaded.keys), bool)
        if exclude is not None:
            excluded |= (loaded.keys[:, 0] == exclude[0]) & (loaded.keys[:, 1] == exclude[1])
        if exclude_job is not None:
            excluded |= loaded.keys[:, 0] == exclude_job
        excluded_count = int(excluded.sum())
        wanted = min(limit, len(loaded.keys) - excluded_count)
        if wanted <= 0:
            return []
        query = np.asarray(vector, np.float32)
        if loaded.hashed is not None:
            with self._lock:   # faiss may not search while a refresh appends to the same hashed vectors
                similarities, top = loaded.hashed.search(query, wanted + excluded_count)
            keep = ~excluded[top]
            similarities, top = similarities[keep], top[keep]
            order = np.lexsort((loaded.ids[top], -similarities))[:wanted]
            similarities, top = similarities[order], top[order]
        else:
            similarities = _product(loaded.vectors, query)
            similarities[excluded] = -np.inf
            # Every row at least as similar as the wanted-th best, so equal similarities are never cut
            # arbitrarily: ties rank the earlier indexed first, the same with any limit.
            threshold = np.partition(similarities, len(similarities) - wanted)[len(similarities) - wanted]
            top = np.flatnonzero(similarities >= threshold)
            top = top[np.lexsort((loaded.ids[top], -similarities[top]))][:wanted]
            similarities = similarities[top]
        ids = loaded.ids[top].tolist()
        with self._lock:
            thumbnails = {row[0]: (row[1], row[2]) for row in self._reader().execute(
                f"SELECT id, original, restored FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids)}
        return [Hit(job, track, float(similarity), *thumbnails.get(row_id, (None, None)))
                for (job, track), similarity, row_id in zip(loaded.keys[top].tolist(), similarities.tolist(), ids)]

    def _reader(self) -> sqlite3.Connection:
        """One connection for the searches (autocommit reads, used under the lock): opening one per search
        costs more than the search itself at 10,000 faces."""
        if self._read_connection is None:
            self._read_connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                                    check_same_thread=False)
        return self._read_connection

    def _current(self) -> _Loaded:
        """The vectors in memory, brought up to date: new rows only, or everything again after a removal."""
        with self._lock:
            loaded = self._loaded
            db = self._reader()
            db.execute("BEGIN")   # one snapshot: the counter and the rows agree
            try:
                removals = db.execute("SELECT value FROM meta WHERE key='removals'").fetchone()[0]
                since = loaded.max_id if removals == loaded.removals else 0
                rows = db.execute("SELECT id, job_id, track_id, vector FROM faces WHERE id > ? ORDER BY id",
                                  (since,)).fetchall()
            finally:
                db.execute("COMMIT")
            if since == loaded.max_id and not rows and removals == loaded.removals:
                return loaded
            ids = np.array([r[0] for r in rows], np.int64)
            keys = np.array([(r[1], r[2]) for r in rows], np.int64).reshape(-1, 2)
            vectors = np.frombuffer(b"".join(r[3] for r in rows), "<f4").astype(np.float32).reshape(-1, DIMENSIONS)
            hashed = None
            if since:
                if loaded.hashed is not None:
                    hashed = loaded.hashed
                    hashed.add(vectors, first_position=len(loaded.ids))
                    vectors = vectors[:0]
                else:
                    vectors = np.concatenate([loaded.vectors, vectors])
                ids, keys = np.concatenate([loaded.ids, ids]), np.concatenate([loaded.keys, keys])
            if (hashed is None and self.approximate_from_rows is not None
                    and len(vectors) >= self.approximate_from_rows):
                hashed = _HashedVectors(vectors)
                vectors = vectors[:0]
            self._loaded = _Loaded(removals, int(ids[-1]) if len(ids) else 0, ids, keys, vectors, hashed)
            return self._loaded


# Below this many rows numpy's own single-threaded loop (einsum) is used: OpenBLAS wakes its threads for a
# matrix-vector product this size, and on a busy 2-core machine that wait made 10,000 faces take 90 ms instead
# of 0.3 ms (docs/BENCHMARKS.md, "Person search"). Above it, BLAS's threads pay for themselves.
BLAS_FROM_ROWS = 200_000


def _product(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    if len(vectors) < BLAS_FROM_ROWS:
        return np.einsum("ij,j->i", vectors, vector)
    return vectors @ vector


# Hashing pays for itself from a few hundred thousand faces: below, the exact product takes a few milliseconds;
# above, it reads hundreds of megabytes per search (docs/BENCHMARKS.md, "Person search").
APPROXIMATE_FROM_ROWS = 200_000
HASH_BITS = 256      # bits per face: 32 bytes scanned per stored face instead of 512
# Faces whose codes are closest re-ranked exactly per search (or 50 per result wanted, if more): at a million
# faces 1,000 finds the exact best match 99 % of the time on the hardest data, and more cost more than they find.
CANDIDATES = 1000


class _HashedVectors:
    """The vectors with a 256-bit binary code each (faiss IndexLSH: signs of a random rotation, so the share of
    differing bits estimates the angle between two faces whatever the data look like), searched by Hamming
    distance for CANDIDATES candidates, which are then re-ranked by their exact similarity
    (faiss IndexRefineFlat). Positions in the loaded arrays are the faiss ids: faiss numbers added vectors
    consecutively, and new rows are always appended."""

    def __init__(self, vectors: np.ndarray):
        import faiss   # only here: exact search, and every other process, never loads it

        # One thread per search: the server runs searches side by side, and OpenMP's waiting threads would
        # compete with the daemon's work on a small machine.
        faiss.omp_set_num_threads(1)
        self._faiss = faiss
        self._index = faiss.IndexRefineFlat(faiss.IndexLSH(DIMENSIONS, HASH_BITS, True, False))
        self.candidates = CANDIDATES
        self.add(vectors, first_position=0)

    def add(self, vectors: np.ndarray, first_position: int) -> None:
        if self._index.ntotal != first_position:
            raise RuntimeError(f"hashed index out of step: {self._index.ntotal} faces, next row at {first_position}")
        if len(vectors):
            self._index.add(np.ascontiguousarray(vectors, np.float32))

    def search(self, vector: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to `count` (similarity, position) pairs, best first."""
        per_result = max(50, -(-self.candidates // count))
        distances, positions = self._index.search(vector.reshape(1, -1), count,
                                                  params=self._faiss.IndexRefineSearchParameters(k_factor=per_result))
        found = positions[0] >= 0
        # The re-ranking is by squared Euclidean distance, which for unit vectors is 2 - 2 x cosine similarity.
        return (1.0 - distances[0][found] / 2.0).astype(np.float32), positions[0][found]


class _Transaction:
    """A connection used as `with`: one transaction (committed, or rolled back on error), then closed. Writers
    take the lock at BEGIN (IMMEDIATE), so two writers queue instead of failing half-way."""

    def __init__(self, db: sqlite3.Connection, write: bool):
        self.db, self.write = db, write

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.db.close()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def sync_with_journal(index: FaceIndex, published: Iterable[dict[str, Any]], read_manifest) -> int:
    """Bring the index in line with the published jobs: index those it has not seen, drop those retention
    removed. `published`: journal rows of done jobs whose output exists; `read_manifest(job)`: the parsed
    manifest or None. Returns how many jobs were added."""
    current = {int(job["id"]): job for job in published}
    known = index.indexed_jobs()
    index.remove_jobs(known - current.keys())
    added = 0
    for job_id in sorted(current.keys() - known):
        index.add_job(job_id, read_manifest(current[job_id]))
        added += 1
    return added
