"""The list of jobs, one job's page, its output files and thumbnails, and its original beside the restored."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode

import cv2
import numpy as np

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..daemon.journal import STATES
from ..daemon.retry_requests import request_retry, retry_status
from . import safe_files
from .catalog import BadQuery, JobFilter
from .context import ReviewContext, user_of
from .originals import BROWSER_IMAGES, OriginalUnavailable, recorded_from_name
from .report import processing_steps
from .send_file import FILE_CSP, open_or_404, send_fd
from .triage import SORTS, BadTriage, TrackView, arrange_tracks, track_facts

FRAME_ROLES = ("original", "restored")
FRAME_IMAGE_LIMIT = 256 * 1024 * 1024   # one frame of a frame folder; larger is not a frame


class JobRoutes:
    def __init__(self, context: ReviewContext):
        self.context = context

    def jobs_list(self, request: Request) -> Response:
        context = self.context
        try:
            query = JobFilter.from_args(request.query_params)
        except BadQuery as exc:
            return context.page(request, "error.html", 400, message=f"{exc}; fix the filter and try again.")
        listing = context.catalog.list_jobs(query, context.parts.settings.page_size)
        counts = context.store.counts_for_jobs([job["id"] for job in listing.jobs])
        kept = {k: v for k, v in request.query_params.items() if k != "page" and v}
        page_link = lambda number: "?" + urlencode({**kept, "page": number})
        faces = {job["id"]: len(context.catalog.face_tracks(job)) for job in listing.jobs}
        return context.page(request, "list.html", listing=listing, query=query, counts=counts, page_link=page_link,
                            states=STATES, refresh_seconds=context.parts.settings.refresh_seconds, faces=faces)

    def job_page(self, request: Request) -> Response:
        context = self.context
        job_id = request.path_params["job_id"]
        job = context.job_or_404(job_id)
        try:
            view = TrackView.from_args(request.query_params)
        except BadTriage as exc:
            return context.page(request, "error.html", 400, message=f"{exc}; pick one from the page's lists.")
        manifest = context.catalog.manifest(job) or {}
        marks = context.store.marks_for_job(job_id)
        tracks = manifest.get("tracks") or []
        facts = {track["id"]: track_facts(track) for track in tracks}
        shown_tracks, hidden_tracks = arrange_tracks(tracks, marks, view, facts)
        merges = {merge.track_id: merge for merge in context.store.merges_for_job(job_id)}
        people = {track: members for members in context.store.person_groups(job_id).values() for track in members}
        history = context.store.history(job_id)
        frame_times = {}
        for track in manifest.get("tracks") or []:
            frame_times.update({f.get("frame"): f.get("time") for f in track.get("frames") or [] if isinstance(f, dict)})
        current = context.current_case(request)
        selected = set(current.tracks) if current else set()
        steps = processing_steps(manifest) if manifest else []
        source = manifest.get("input") or {}
        original, frame_names = None, []
        if source.get("kind") == "video" and (manifest.get("outputs") or {}).get("restored"):
            original = context.originals.describe(job)
        elif source.get("kind") == "frames" and job.get("kind") == "frames":
            frame_names = [name for name in safe_files.list_below(
                context.catalog.outbox, [job["output_name"], (manifest.get("outputs") or {}).get("restored") or ""])
                if os.path.splitext(name)[1].lower() in BROWSER_IMAGES + (".tif", ".tiff") and name.isprintable()
                and name == name.encode("utf-8", "replace").decode("utf-8")]   # a name that is not UTF-8 has no URL here
        recorded = original.recorded if original else recorded_from_name(job["rel_path"])
        failed_copy = self.failed_copy_parts(job)
        return context.page(request, "job.html", job=job, manifest=manifest, marks=marks, history=history,
                            frame_times=frame_times, selected=selected, steps=steps,
                            refresh_seconds=context.parts.settings.refresh_seconds, view=view, sorts=SORTS,
                            facts=facts, shown_tracks=shown_tracks, hidden_tracks=hidden_tracks, merges=merges,
                            people=people, track_ids=sorted(facts), original=original,
                            frame_names=frame_names, fps=source.get("fps") or 0, recorded=recorded,
                            failed_copy="/".join(failed_copy) if failed_copy else None,
                            retry=retry_status(context.parts.state, job_id) if job["state"] == "failed" else None)

    def failed_copy_parts(self, job: dict) -> list[str] | None:
        """The failed/ copy's path below the outbox (failed_folder may be configured elsewhere: not served)."""
        copy = job.get("failed_copy")
        if job.get("state") != "failed" or not copy:
            return None
        relative = os.path.relpath(os.path.normpath(copy), os.path.normpath(self.context.catalog.outbox))
        try:
            return safe_files.checked_parts(relative)
        except safe_files.NotServable:
            return None   # '..': outside the outbox

    def job_failed_copy(self, request: Request) -> Response:
        """The copy of a failed input (a download: it may be anything) or the note beside it (text)."""
        job = self.context.job_or_404(request.path_params["job_id"])
        what = request.path_params["what"]
        parts = self.failed_copy_parts(job)
        if parts is None or what not in ("copy", "note"):
            raise HTTPException(404)
        if what == "note":
            parts = [*parts[:-1], parts[-1] + ".error.txt"]
        with open_or_404():
            fd = safe_files.open_below(self.context.catalog.outbox, parts)
        return send_fd(request, fd, parts[-1], attachment=what == "copy")

    def job_retry(self, request: Request) -> Response:
        """Ask the daemon to run a failed job's input again (it cannot be done here: the journal is read-only)."""
        context = self.context
        job_id = request.path_params["job_id"]
        job = context.job_or_404(job_id)
        if job["state"] != "failed":
            return context.page(request, "error.html", 409, message=f"job #{job_id} is {job['state']}, not failed; "
                                "only a failed job can be retried.")
        request_retry(context.parts.state, job_id, user_of(request))
        context.store.record_retry(user_of(request), job_id)
        return RedirectResponse(context.url_for("job_page", job_id=job_id), 303)

    def job_original(self, request: Request) -> Response:
        """The original clip as the browser can play it: the inbox file itself, or its proxy."""
        job = self.context.job_or_404(request.path_params["job_id"])
        try:
            fd, name = self.context.originals.open_video(job)
        except OriginalUnavailable:
            raise HTTPException(404) from None
        return send_fd(request, fd, name)

    def job_frame(self, request: Request) -> Response:
        """One frame of a frame-folder job, original (from the inbox folder) or restored; formats a browser
        cannot show (TIFF) are sent as PNG."""
        job = self.context.job_or_404(request.path_params["job_id"])
        role, name = request.path_params["role"], request.path_params["frame"]
        suffix = os.path.splitext(name)[1].lower()
        if role not in FRAME_ROLES or job.get("kind") != "frames" or suffix not in BROWSER_IMAGES + (".tif", ".tiff"):
            raise HTTPException(404)
        manifest = self.context.catalog.manifest(job) or {}
        restored = (manifest.get("outputs") or {}).get("restored")
        if not restored:
            raise HTTPException(404)
        with open_or_404():
            parts = safe_files.checked_parts(name)
            if len(parts) != 1:
                raise HTTPException(404)
            if role == "original":
                # Walked from the configured inbox with O_NOFOLLOW: the folder may since be a link elsewhere.
                fd = safe_files.open_below(Path(job["inbox"]), [*safe_files.checked_parts(job["rel_path"]), *parts])
            else:
                fd = self.context.catalog.open_output_file(job, f"{restored}/{name}")
        if suffix in BROWSER_IMAGES:
            return send_fd(request, fd, name)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(FRAME_IMAGE_LIMIT + 1)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) <= FRAME_IMAGE_LIMIT else None
        if image is None:
            raise HTTPException(404)
        return Response(cv2.imencode(".png", image)[1].tobytes(), media_type="image/png",
                        headers={"Cache-Control": "private, no-cache", "Content-Security-Policy": FILE_CSP})

    def job_file(self, request: Request) -> Response:
        job = self.context.job_or_404(request.path_params["job_id"])
        relative = request.path_params["relative"]
        with open_or_404():
            fd = self.context.catalog.open_output_file(job, relative)
        return send_fd(request, fd, relative)

    def job_thumbnail(self, request: Request) -> Response:
        job = self.context.job_or_404(request.path_params["job_id"])
        face = request.query_params.get("face", "0")
        thumbnail = self.context.catalog.thumbnail_parts(job, int(face)) if face.isdigit() and len(face) < 3 else None
        if thumbnail is None:
            raise HTTPException(404)
        with open_or_404():
            fd = safe_files.open_below(self.context.catalog.outbox, thumbnail)
        return send_fd(request, fd, thumbnail[-1])


def job_routes(context: ReviewContext) -> list[Route]:
    handlers = JobRoutes(context)
    return [
        Route("/", handlers.jobs_list, name="jobs_list"),
        Route("/jobs/{job_id:int}", handlers.job_page, name="job_page"),
        Route("/jobs/{job_id:int}/files/{relative:path}", handlers.job_file, name="job_file"),
        Route("/jobs/{job_id:int}/thumbnail", handlers.job_thumbnail, name="job_thumbnail"),
        Route("/jobs/{job_id:int}/original", handlers.job_original, name="job_original"),
        Route("/jobs/{job_id:int}/frames/{role}/{frame}", handlers.job_frame, name="job_frame"),
        Route("/jobs/{job_id:int}/failed/{what}", handlers.job_failed_copy, name="job_failed_copy"),
        Route("/jobs/{job_id:int}/retry", handlers.job_retry, methods=["POST"], name="job_retry"),
    ]
