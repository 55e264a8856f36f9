"""Review marks on a job's tracks, the named cases shared by every reviewer, and their exports (build,
summary, files)."""
from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import safe_files
from .case_export import CASE_ID, ExportError, build_case, case_lock, sha256_fd
from .cases import CASE_NAME_LIMIT, Case, CaseError, form_text
from .catalog import MAX_ROW_ID
from .report import portrait_label
from .context import ReviewContext, form, user_of
from .send_file import open_or_404, send_fd
from .store import MARK_STATES, StaleMark

# What an export asks for (field: label, length limit); the values go into the report and the audit row.
EXPORT_FIELDS = {"name": ("the case name", CASE_NAME_LIMIT), "investigator": ("the investigator", 200),
                 "purpose": ("the purpose", 2000)}
EXPORT_FIELD_LIMITS = {key: limit for key, (_, limit) in EXPORT_FIELDS.items()}


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

    def _track_item(self, request: Request) -> tuple[int, int]:
        try:
            item = int(form(request)["job"]), int(form(request)["track"])
        except (KeyError, ValueError):
            raise HTTPException(400) from None
        if not all(0 <= number <= MAX_ROW_ID for number in item):
            raise HTTPException(400)
        return item

    def _case_or_404(self, request: Request) -> Case:
        case_id = request.path_params["case_id"]
        case = self.context.store.case(case_id) if 0 < case_id <= MAX_ROW_ID else None
        if case is None:
            raise HTTPException(404)
        return case

    def case_toggle(self, request: Request) -> Response:
        """"add to case" on a job page: into this browser's current case, made (and named after the reviewer)
        when there is none yet."""
        context = self.context
        job_id, track_id = self._track_item(request)
        case = context.current_case(request)
        try:
            if case is None:
                case_id = context.store.create_case(f"Untitled case of {user_of(request)}", user_of(request))
                request.session["case"] = case_id
                case = context.store.case(case_id)
            present = (job_id, track_id) not in case.tracks
            context.store.set_case_track(case.id, job_id, track_id, present, user_of(request))
        except CaseError as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        return RedirectResponse(context.url_for("job_page", job_id=job_id) + f"#track-{track_id}", 303)

    def case_page(self, request: Request) -> Response:
        return self.context.page(request, "cases.html", cases=self.context.store.cases())

    def case_new(self, request: Request) -> Response:
        context = self.context
        try:
            case_id = context.store.create_case(form(request).get("name", ""), user_of(request))
        except CaseError as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        request.session["case"] = case_id
        return RedirectResponse(context.url_for("case_view", case_id=case_id), 303)

    def case_view(self, request: Request) -> Response:
        context = self.context
        case = self._case_or_404(request)
        history = context.store.case_history(case.id)
        exports = [entry for entry in history if entry["action"] == "export"]
        last = exports[-1]["after"] if exports else {}
        return context.page(request, "case.html", case=case, items=self._case_items(case), history=history,
                            exports=exports, investigator=last.get("investigator") or (
                                "" if user_of(request) in ("local", "api-token") else user_of(request)),
                            purpose=last.get("purpose", ""), limits=EXPORT_FIELD_LIMITS)

    def _case_items(self, case: Case) -> list[dict[str, Any]]:
        """Each track of the case with what its card shows: the input's name, its times and its face as served
        images: the track's portrait (reference crop and restored fusion) where the manifest has one, otherwise
        its best frame (original and restored); a job or track that is gone says so."""
        items, manifests = [], {}
        for job_id, track_id in case.tracks:
            if job_id not in manifests:
                job = self.context.catalog.job(job_id)
                manifests[job_id] = (job, self.context.catalog.manifest(job) if job else None)
            job, manifest = manifests[job_id]
            track = next((t for t in (manifest or {}).get("tracks") or [] if t.get("id") == track_id), None)
            portrait = (track or {}).get("portrait")
            if isinstance(portrait, dict) and portrait.get("restored"):
                face, restored_label = portrait, portrait_label(portrait.get("frames_merged") or [])
            else:
                face, restored_label = ((track or {}).get("best_frames") or [{}])[0], "AI-restored"
            items.append({"job_id": job_id, "track_id": track_id, "job": job, "track": track,
                          "original": face.get("original"), "restored": face.get("restored"),
                          "restored_label": restored_label})
        return items

    def case_rename(self, request: Request) -> Response:
        context = self.context
        case = self._case_or_404(request)
        try:
            context.store.rename_case(case.id, form(request).get("name", ""), user_of(request))
        except CaseError as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        return RedirectResponse(context.url_for("case_view", case_id=case.id), 303)

    def case_open(self, request: Request) -> Response:
        case = self._case_or_404(request)
        request.session["case"] = case.id
        return RedirectResponse(self.context.url_for("case_view", case_id=case.id), 303)

    def case_tracks(self, request: Request) -> Response:
        context = self.context
        case = self._case_or_404(request)
        job_id, track_id = self._track_item(request)
        action = form(request).get("action", "")
        if action not in ("add", "remove"):
            return context.page(request, "error.html", 400, message=f"action {action!r} is not add or remove")
        try:
            context.store.set_case_track(case.id, job_id, track_id, action == "add", user_of(request))
        except CaseError as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        return RedirectResponse(context.url_for("case_view", case_id=case.id), 303)

    def case_export(self, request: Request) -> Response:
        context, settings = self.context, self.context.parts.settings
        case = self._case_or_404(request)
        fields = form(request)
        try:
            details = {key: form_text(fields.get(key, ""), label, limit, lines=key == "purpose")
                       for key, (label, limit) in EXPORT_FIELDS.items()}
            if details["name"] != case.name:
                context.store.rename_case(case.id, details["name"], user_of(request))
            result = build_case(context.catalog, context.store, list(case.tracks), context.parts.exports,
                                context.environment, int(settings.export_max_input_mb * 1024 * 1024), details)
        except (CaseError, ExportError) as exc:
            return context.page(request, "error.html", 400, message=str(exc))
        context.store.record_export(user_of(request), {"case": result.case_id, "zip_sha256": result.zip_sha256,
                                                       "selection": sorted(case.tracks), "server_case": case.id,
                                                       **details})
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
        Route("/case/new", handlers.case_new, methods=["POST"], name="case_new"),
        Route("/case/toggle", handlers.case_toggle, methods=["POST"], name="case_toggle"),
        Route("/case/{case_id:int}", handlers.case_view, name="case_view"),
        Route("/case/{case_id:int}/rename", handlers.case_rename, methods=["POST"], name="case_rename"),
        Route("/case/{case_id:int}/open", handlers.case_open, methods=["POST"], name="case_open"),
        Route("/case/{case_id:int}/tracks", handlers.case_tracks, methods=["POST"], name="case_tracks"),
        Route("/case/{case_id:int}/export", handlers.case_export, methods=["POST"], name="case_export"),
        Route("/cases/{case_id}", handlers.case_done, name="case_done"),
        Route("/cases/{case_id}/download", handlers.case_download, name="case_download"),
        Route("/cases/{case_id}/files/{relative:path}", handlers.case_file, name="case_file"),
    ]
