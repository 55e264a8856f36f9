"""Keep the person-search index in line with the outbox: the daemon calls this after each job and retention
pass, the review server and `facedeblur search` before they search (a no-op when nothing changed)."""
from __future__ import annotations

import logging
from pathlib import Path

from .face_index import FaceIndex, sync_with_journal

log = logging.getLogger(__name__)


def refresh_face_index(outbox: Path, state: Path, index: FaceIndex | None = None) -> FaceIndex:
    """Index every published job not yet indexed (from its manifest, read through the review catalog's
    checks: only folders directly in the outbox, no symlinks, a size limit) and forget deleted ones."""
    from ..review.catalog import Catalog

    catalog = Catalog(outbox, state)
    index = index or FaceIndex(state)
    added = sync_with_journal(index, catalog.published(), catalog.manifest)
    if added:
        log.info("person search: indexed %d job(s), %d face(s) in all", added, index.size())
    return index
