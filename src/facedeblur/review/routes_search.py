"""Person search: "find this face elsewhere" from a track, and a search by an uploaded photo.

Both rank every indexed track by cosine similarity of SFace identity vectors (facedeblur.search). The index is
brought up to date with the outbox before each search, at most every few seconds. The photo arrives as a
multipart form that the gate has already size-checked and CSRF-checked (app.UPLOAD_LIMITS); its bytes are
checked like every other image input before anything decodes them.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import FacedeblurError
from ..safe_text import display_name
from ..search import DEFAULT_RESULTS
from ..search.face_index import APPROXIMATE_FROM_ROWS, FaceIndex, Hit
from ..search.identity_vector import DIMENSIONS
from ..search.photo import MAX_PHOTO_BYTES, PhotoSearcher
from ..search.sync import refresh_face_index
from .context import ReviewContext

PHOTO_PATH = "/search/photo"
UPLOAD_LIMITS = {PHOTO_PATH: MAX_PHOTO_BYTES + 64 * 1024}   # the photo and the multipart framing around it
REFRESH_SECONDS = 5.0

log = logging.getLogger(__name__)


class SearchRoutes:
    def __init__(self, context: ReviewContext):
        self.context = context
        self._index: FaceIndex | None = None
        self._searcher: PhotoSearcher | None = None
        self._refreshed = float("-inf")
        self._lock = threading.Lock()

    def index(self) -> FaceIndex:
        """The index, synced with the outbox if the last sync is older than REFRESH_SECONDS."""
        parts = self.context.parts
        with self._lock:
            if self._index is None:
                self._index = FaceIndex(parts.state, approximate_from_rows=APPROXIMATE_FROM_ROWS)
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                refresh_face_index(parts.outbox, parts.state, self._index)
                self._refreshed = time.monotonic()
            return self._index

    def warm_index(self) -> None:
        """Sync the index and read its vectors in (and hash them, when there are many) before the first
        search asks: with a million faces that takes a while."""
        try:
            self.index().search(np.zeros(DIMENSIONS, np.float32), 1)
        except (FacedeblurError, OSError, sqlite3.Error) as exc:
            log.warning("person search: could not prepare the index at start (%s); the first search will", exc)

    def searcher(self) -> PhotoSearcher:
        with self._lock:   # loading the models takes a second; one load however many first searches arrive
            if self._searcher is None:
                self._searcher = PhotoSearcher(self.context.parts.pipeline)
            return self._searcher

    def results(self, request: Request, hits: list[Hit], status: int = 200, **extra: Any) -> Response:
        jobs = {job_id: self.context.catalog.job(job_id) for job_id in {hit.job_id for hit in hits}}
        # A job whose output retention removed since the last sync is left out rather than shown broken.
        rows = [{"rank": rank, "hit": hit, "name": jobs[hit.job_id]["shown_name"]}
                for rank, hit in enumerate(hits, 1) if (jobs[hit.job_id] or {}).get("output_name")]
        return self.context.page(request, "search.html", status, rows=rows, max_mb=MAX_PHOTO_BYTES // 2**20,
                                 photo_path=PHOTO_PATH, **extra)

    def search_page(self, request: Request) -> Response:
        return self.results(request, [], searched=False)

    def search_track(self, request: Request) -> Response:
        job_id, track_id = request.path_params["job_id"], request.path_params["track_id"]
        job = self.context.job_or_404(job_id)
        index = self.index()
        vector = index.vector_of(job_id, track_id)
        if vector is None:
            return self.results(request, [], 404, searched=False,
                                error=f"Job #{job_id} track {track_id} has no identity vector (no such track, a job "
                                      "processed before person search, or a track with no detected frame).")
        hits = index.search(vector, DEFAULT_RESULTS, exclude=(job_id, track_id))
        return self.results(request, hits, searched=True, query_job=job, query_track=track_id,
                            indexed=index.size())

    def search_photo(self, request: Request) -> Response:
        files = request.state.files
        if "photo" not in files:
            return self.results(request, [], 400, searched=False, error="Choose a photo to search with.")
        name, data = files["photo"]
        shown = display_name(name or "photo")
        try:
            face = self.searcher().face_of(data, shown)
        except FacedeblurError as exc:
            return self.results(request, [], 400, searched=False, error=str(exc))
        index = self.index()
        return self.results(request, index.search(face.vector, DEFAULT_RESULTS), searched=True, photo_name=shown,
                            faces_found=face.faces_found, indexed=index.size())


def search_routes(context: ReviewContext) -> list[Route]:
    handlers = SearchRoutes(context)
    context.warm_ups.append(handlers.warm_index)
    return [
        Route("/search", handlers.search_page, name="search_page"),
        Route("/search/track/{job_id:int}/{track_id:int}", handlers.search_track, name="search_track"),
        Route(PHOTO_PATH, handlers.search_photo, methods=["POST"], name="search_photo"),
    ]
