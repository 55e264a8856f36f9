"""The list of jobs, one job's page, and its output files and thumbnail."""
from __future__ import annotations

from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..daemon.journal import STATES
from . import safe_files
from .catalog import BadQuery, JobFilter
from .context import ReviewContext
from .report import processing_steps
from .send_file import open_or_404, send_fd


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
        return context.page(request, "list.html", listing=listing, query=query, counts=counts, page_link=page_link,
                            states=STATES)

    def job_page(self, request: Request) -> Response:
        context = self.context
        job_id = request.path_params["job_id"]
        job = context.job_or_404(job_id)
        manifest = context.catalog.manifest(job) or {}
        marks = context.store.marks_for_job(job_id)
        history = context.store.history(job_id)
        frame_times = {}
        for track in manifest.get("tracks") or []:
            frame_times.update({f.get("frame"): f.get("time") for f in track.get("frames") or [] if isinstance(f, dict)})
        current = context.current_case(request)
        selected = set(current.tracks) if current else set()
        steps = processing_steps(manifest) if manifest else []
        return context.page(request, "job.html", job=job, manifest=manifest, marks=marks, history=history,
                            frame_times=frame_times, selected=selected, steps=steps)

    def job_file(self, request: Request) -> Response:
        job = self.context.job_or_404(request.path_params["job_id"])
        relative = request.path_params["relative"]
        with open_or_404():
            fd = self.context.catalog.open_output_file(job, relative)
        return send_fd(request, fd, relative)

    def job_thumbnail(self, request: Request) -> Response:
        job = self.context.job_or_404(request.path_params["job_id"])
        thumbnail = self.context.catalog.thumbnail_parts(job)
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
    ]
