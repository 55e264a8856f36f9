"""Retry requests: a reviewer asks the daemon to run a failed input again.

The review server never writes the journal (it opens it read-only), so it leaves a request in the state
folder both share: STATE/retry-requests/<job id>.json. The daemon takes requests in its loop: when the job
failed and its input is still in the inbox unchanged (same size and mtime as when it was taken), it queues the
input again as a new job (the failed job keeps its history); otherwise it says why not. Either way it answers
in <job id>.outcome.json and removes the request. An input that was fixed in place needs no request: the
daemon takes its new content as a new job by itself.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..image_files import write_bytes_atomic
from .journal import Journal
from .logs import logfmt_value

log = logging.getLogger("facedeblur.daemon")

REQUEST_FOLDER = "retry-requests"
RECORD_LIMIT = 16 * 1024


def _folder(state: Path) -> Path:
    return Path(state) / REQUEST_FOLDER


def _read(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(RECORD_LIMIT + 1)
    try:
        record = json.loads(data) if len(data) <= RECORD_LIMIT else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def request_retry(state: Path, job_id: int, who: str) -> None:
    """Leave a request for the daemon (the server's side)."""
    folder = _folder(state)
    folder.mkdir(exist_ok=True)
    (folder / f"{job_id}.outcome.json").unlink(missing_ok=True)
    write_bytes_atomic(folder / f"{job_id}.json", json.dumps({"who": who, "at": time.time()}).encode())


def retry_status(state: Path, job_id: int) -> dict[str, Any] | None:
    """The pending request ({'who', 'at'}) or the daemon's answer ({'who', 'at', 'new_job' or 'refused'}); None
    when no retry was asked for."""
    folder = _folder(state)
    return _read(folder / f"{job_id}.json") or _read(folder / f"{job_id}.outcome.json")


def take_requests(journal: Journal, state: Path) -> list[int]:
    """The daemon's side: act on every pending request; the ids of the new jobs."""
    folder = _folder(state)
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".json") and name[:-5].isdigit()]
    except OSError:
        return []
    queued = []
    for name in names:
        job_id = int(name[:-5])
        request = _read(folder / name) or {}
        outcome = {"who": str(request.get("who", ""))[:200], "at": request.get("at"), **_retry(journal, job_id)}
        if "new_job" in outcome:
            queued.append(outcome["new_job"])
        log.info("event=retry_requested job=%d by=%s %s", job_id, logfmt_value(outcome["who"]),
                 f"new_job={outcome['new_job']}" if "new_job" in outcome
                 else f"refused={logfmt_value(outcome['refused'])}")
        write_bytes_atomic(folder / f"{job_id}.outcome.json", json.dumps(outcome).encode())
        (folder / name).unlink(missing_ok=True)
    return queued


def _retry(journal: Journal, job_id: int) -> dict[str, Any]:
    if journal.db.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone() is None:
        return {"refused": "no such job"}
    job = journal.get(job_id)
    if job.state != "failed":
        return {"refused": f"the job is {job.state}, not failed"}
    try:
        info = os.lstat(job.path)
    except OSError:
        return {"refused": "the input is no longer in the inbox: drop it in again"}
    if job.kind == "frames":
        unchanged = stat.S_ISDIR(info.st_mode)   # the worker checks every frame against intake as it starts
    else:
        unchanged = stat.S_ISREG(info.st_mode) and info.st_size == job.size and info.st_mtime_ns == job.mtime_ns
    if not unchanged:
        return {"refused": "the input changed since it failed; the daemon takes its new content as a new job by itself"}
    new_job = journal.add(path=job.path, inbox=job.inbox, rel_path=job.rel_path, kind=job.kind, size=job.size,
                          mtime_ns=job.mtime_ns, sha256=job.sha256)
    return {"new_job": new_job}
