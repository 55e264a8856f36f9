"""Optional retention: delete published outputs older than N days, then the oldest beyond a disk budget.

Only folders the journal published are ever deleted (never inputs, failed/ or anything a person put
in the outbox), with the review server's playable proxies of their inputs (STATE/proxies); the journal row
stays, marked `output_deleted_at`, so the history is kept.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from ..review.originals import remove_proxies
from .journal import Journal
from .logs import logfmt_value

log = logging.getLogger("facedeblur.daemon")


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def apply_retention(journal: Journal, outbox: Path, max_age_days: float | None, max_gb: float | None) -> int:
    """Returns how many output folders were deleted."""
    if max_age_days is None and max_gb is None:
        return 0
    published = list(journal.published())   # newest first
    doomed: list = []
    if max_age_days is not None:
        cutoff = time.time() - max_age_days * 86400
        doomed += [job for job in published if job["finished_at"] < cutoff]
    if max_gb is not None:
        budget = max_gb * 1e9
        used = 0
        doomed_ids = {job["id"] for job in doomed}
        for job in published:
            if job["id"] in doomed_ids:
                continue
            used += folder_bytes(Path(job["output"]))
            if used > budget:
                doomed.append(job)
    deleted = 0
    for job in doomed:
        folder = Path(job["output"])
        if folder.parent != outbox:   # published folders always sit directly in the outbox
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            # Before the journal says deleted: a proxy that cannot be removed now is tried again next time.
            remove_proxies(journal.path.parent, job["id"])
            journal.mark_output_deleted(job["id"])
            deleted += 1
            log.info("event=retention_deleted job=%d output=%s", job["id"], logfmt_value(folder))
    return deleted
