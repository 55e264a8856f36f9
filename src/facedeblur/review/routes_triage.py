"""Merging two tracks of a job into one person, and undoing it (store.merge_tracks / unmerge_track)."""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .catalog import MAX_ROW_ID
from .context import ReviewContext, form, user_of
from .store import MergeRefused


class TriageRoutes:
    def __init__(self, context: ReviewContext):
        self.context = context

    def _job_and_tracks(self, request: Request) -> tuple[dict, set[int]]:
        job = self.context.job_or_404(request.path_params["job_id"])
        track_ids = {t.get("id") for t in (self.context.catalog.manifest(job) or {}).get("tracks") or []}
        if request.path_params["track_id"] not in track_ids:
            raise HTTPException(404)
        return job, track_ids

    def _back(self, job_id: int, track_id: int) -> Response:
        return RedirectResponse(self.context.url_for("job_page", job_id=job_id) + f"#track-{track_id}", 303)

    def merge(self, request: Request) -> Response:
        context = self.context
        job, track_ids = self._job_and_tracks(request)
        track_id = request.path_params["track_id"]
        try:
            into = int(form(request).get("into", ""))
        except ValueError:
            return context.page(request, "error.html", 400, message="choose the track to merge into from the list.")
        if not 0 <= into <= MAX_ROW_ID or into not in track_ids:
            return context.page(request, "error.html", 400,
                                message=f"track {into} is not a track of job {job['id']}; pick one from the list.")
        try:
            context.store.merge_tracks(job["id"], track_id, into, user_of(request))
        except MergeRefused as exc:
            return context.page(request, "error.html", 409, message=f"{exc}.")
        return self._back(job["id"], track_id)

    def unmerge(self, request: Request) -> Response:
        context = self.context
        job, _ = self._job_and_tracks(request)
        track_id = request.path_params["track_id"]
        try:
            context.store.unmerge_track(job["id"], track_id, user_of(request))
        except MergeRefused as exc:
            return context.page(request, "error.html", 409, message=f"{exc}; reload the page.")
        return self._back(job["id"], track_id)


def triage_routes(context: ReviewContext) -> list[Route]:
    handlers = TriageRoutes(context)
    return [
        Route("/jobs/{job_id:int}/tracks/{track_id:int}/merge", handlers.merge, methods=["POST"], name="merge_track"),
        Route("/jobs/{job_id:int}/tracks/{track_id:int}/unmerge", handlers.unmerge, methods=["POST"],
              name="unmerge_track"),
    ]
