"""Review marks on a job's tracks, the case selection, and the case exports (build, summary, files)."""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import safe_files
from .case_export import CASE_ID, ExportError, build_case, case_lock, sha256_fd
from .catalog import MAX_ROW_ID
from .context import ReviewContext, form, user_of
from .send_file import open_or_404, send_fd
from .store import MARK_STATES, StaleMark

MAX_CASE_ITEMS = 150   # the selection lives in the signed session cookie, which must stay under 4 KB


def case_folder(case_id: str) -> str:
    if not CASE_ID.match(case_id):
        raise HTTPException(404)
    return f"case-{case_id}"


class CaseRoutes:
    def __init__(self, context: ReviewContext):
        self.context = context

    def mark_track(self, request: Request) -> Response:
        context = self.context
        job_id, track_id = request.path_params["job_id"], request.path_params["track_id"]
        job = context.job_or_404(job_id)
        track_ids = {t.get("id") for t in (context.catalog.manifest(job) or {}).get("tracks") or []}
        if track_id not in track_ids:
            raise HTTPException(404)
        fields = form(request)
        status = fields.get("status", "")
        if status not in MARK_STATES:
            return context.page(request, "error.html", 400, message=f"status {status!r} is not one of "
                                f"{', '.join(MARK_STATES)}; pick one from the list.")
        try:
            seen = int(fields.get("version", ""))
        except ValueError:
            return context.page(request, "error.html", 400,
                                message="the form has no version; reload the page and mark again.")
        try:
            context.store.set_mark(job_id, track_id, status, fields.get("note", ""), user_of(request), seen)
        except StaleMark as stale:
            return context.page(request, "conflict.html", 409, job=job, current=stale.current,
                                mine={"status": status, "note": fields.get("note", "")})
        return RedirectResponse(context.url_for("job_page", job_id=job_id) + f"#track-{track_id}", 303)

    def case_toggle(self, request: Request) -> Response:
        try:
            item = [int(form(request)["job"]), int(form(request)["track"])]
        except (KeyError, ValueError):
            raise HTTPException(400) from None
        if not all(0 <= number <= MAX_ROW_ID for number in item):
            raise HTTPException(400)
        case = [list(x) for x in request.session.get("case", [])]
        if item in case:
            case.remove(item)
        elif len(case) >= MAX_CASE_ITEMS:
            return self.context.page(request, "error.html", 400, message=f"a case holds at most {MAX_CASE_ITEMS} "
                                     "tracks; export this one and start another.")
        else:
            case.append(item)
        request.session["case"] = case
        return RedirectResponse(self.context.url_for("job_page", job_id=item[0]) + f"#track-{item[1]}", 303)

    def case_page(self, request: Request) -> Response:
        return self.context.page(request, "case.html", case=sorted(tuple(x) for x in request.session.get("case", [])))

    def case_clear(self, request: Request) -> Response:
        request.session["case"] = []
        return RedirectResponse(self.context.url_for("case_page"), 303)

    def case_export(self, request: Request) -> Response:
        context, settings = self.context, self.context.parts.settings
        selection = [tuple(x) for x in request.session.get("case", [])]
        try:
            result = build_case(context.catalog, context.store, selection, context.parts.exports,
                                context.environment, int(settings.export_max_input_mb * 1024 * 1024))
        except ExportError as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        context.store.record_export(user_of(request), {"case": result.case_id, "zip_sha256": result.zip_sha256,
                                                       "selection": sorted(selection)})
        return RedirectResponse(context.url_for("case_done", case_id=result.case_id), 303)

    def case_done(self, request: Request) -> Response:
        exports = self.context.parts.exports
        case_id = request.path_params["case_id"]
        folder = case_folder(case_id)
        with open_or_404(), case_lock(case_id):   # the folder and the zip of one export, never one from each
            sums = safe_files.read_below(exports, [folder, "SHA256SUMS"], 16 * 1024 * 1024).decode()
            fd = safe_files.open_below(exports, [f"{folder}.zip"])
        zip_sha = sha256_fd(fd)
        files = [line.split("  ", 1) for line in sums.splitlines() if "  " in line]
        return self.context.page(request, "case_done.html", case_id=case_id, files=files, zip_sha256=zip_sha)

    def case_download(self, request: Request) -> Response:
        folder = case_folder(request.path_params["case_id"])
        with open_or_404(), case_lock(request.path_params["case_id"]):
            fd = safe_files.open_below(self.context.parts.exports, [f"{folder}.zip"])
        return send_fd(request, fd, f"{folder}.zip", attachment=True)

    def case_file(self, request: Request) -> Response:
        folder = case_folder(request.path_params["case_id"])
        relative = request.path_params["relative"]
        with open_or_404(), case_lock(request.path_params["case_id"]):
            fd = safe_files.open_below(self.context.parts.exports, [folder, *safe_files.checked_parts(relative)])
        return send_fd(request, fd, relative)


def case_routes(context: ReviewContext) -> list[Route]:
    handlers = CaseRoutes(context)
    return [
        Route("/jobs/{job_id:int}/tracks/{track_id:int}/mark", handlers.mark_track, methods=["POST"],
              name="mark_track"),
        Route("/case", handlers.case_page, name="case_page"),
        Route("/case/toggle", handlers.case_toggle, methods=["POST"], name="case_toggle"),
        Route("/case/clear", handlers.case_clear, methods=["POST"], name="case_clear"),
        Route("/case/export", handlers.case_export, methods=["POST"], name="case_export"),
        Route("/cases/{case_id}", handlers.case_done, name="case_done"),
        Route("/cases/{case_id}/download", handlers.case_download, name="case_download"),
        Route("/cases/{case_id}/files/{relative:path}", handlers.case_file, name="case_file"),
    ]
