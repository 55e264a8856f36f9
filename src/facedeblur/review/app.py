"""The Starlette application: pages, media with Range requests, review marks, case export, login.

Security lives here in one place per rule: the `ReviewGate` middleware checks the Host name, authenticates,
reads the (small, urlencoded) form and checks its CSRF token for every state-changing request before any
route runs; the `SecurityHeaders` middleware sets the headers (CSP without inline scripts) on every response,
errors included; Jinja2 autoescaping escapes every name and note; every file goes through safe_files (no
traversal, no symlinks). Routes are plain functions: Starlette runs them in its thread pool, which suits the
blocking SQLite and file reads they do.
"""
from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..daemon.journal import STATES
from ..config import ServeSettings
from ..safe_text import display_name
from . import auth, safe_files
from .case_export import CASE_ID, ExportError, build_case, case_lock, sha256_fd
from .catalog import MAX_ROW_ID, ROOT_FOLDER, BadQuery, Catalog, JobFilter
from .report import AI_NOTICE, processing_steps, utc_text
from .store import MARK_STATES, ReviewStore, StaleMark

SESSION_COOKIE = "facedeblur_review"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_FORM_BYTES = 64 * 1024   # the largest form is a mark with a 4000-character note
MAX_FORM_FIELDS = 50
MAX_CASE_ITEMS = 150   # the selection lives in the signed session cookie, which must stay under 4 KB
MEDIA_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".json": "application/json", ".pdf": "application/pdf",
               ".zip": "application/zip", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# A served file (an exported report, a manifest) may be HTML but never runs anything: sandboxed, no scripts.
FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
ERROR_MESSAGES = {400: "Bad request: the form or link is incomplete.", 404: "Not found.",
                  405: "This address does not take that method.",
                  413: "The form is too large (notes hold at most 4000 characters)."}


def templates_environment() -> Environment:
    """The Jinja2 environment of the pages and the exported report.html (autoescaped like every .html)."""
    environment = Environment(loader=PackageLoader("facedeblur.review", "templates"),
                              autoescape=select_autoescape(["html"]))
    environment.globals.update(utc=utc_text, notice=AI_NOTICE, version=__version__, shown=display_name,
                               mark_states=MARK_STATES, root_folder=ROOT_FOLDER)
    return environment


def is_public(path: str) -> bool:
    """What answers without a login: the health check, the login page and the stylesheet and script."""
    return path in ("/healthz", "/login") or path.startswith("/static/")


class ReviewGate:
    """Host check, authentication, form reading and CSRF for every request, before any route runs.

    Sets `state.user` (a user name, 'local' or 'api-token'; None while logged out), `state.via_token` and
    `state.form` (the parsed urlencoded body; routes never read the body themselves).
    """

    def __init__(self, app: ASGIApp, credentials: auth.Credentials, sessions: auth.LiveSessions):
        self.app = app
        self.credentials = credentials
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        credentials = self.credentials
        if not credentials.configured and not auth.is_loopback(auth.host_name(request.headers.get("host", ""))):
            # Without credentials only loopback names are answered: a web page whose domain an attacker
            # re-points at 127.0.0.1 (DNS rebinding) would otherwise read and change marks as 'local'.
            await plain(400, "this server answers only to 127.0.0.1, ::1 or localhost without credentials")(
                scope, receive, send)
            return
        session = request.session
        if "csrf" not in session:
            session["csrf"] = auth.new_csrf_token()
        user, via_token = None, False
        header = request.headers.get("authorization", "")
        if credentials.configured and header:
            scheme, _, offered = header.partition(" ")
            # A wrong token is an error even where a session exists: a client must learn its token is bad.
            if scheme.lower() != "bearer" or not credentials.check_token(offered.strip()):
                await plain(401, "wrong or missing API token", bearer=True)(scope, receive, send)
                return
            user, via_token = "api-token", True
        elif not credentials.configured:
            user = "local"   # loopback only (command.py refuses anything else without credentials)
        elif session.get("user") in credentials.users and self.sessions.user_of(session.get("sid")) == session["user"]:
            user = session["user"]   # a session logged out (or from before a restart) is not in LiveSessions
        form: dict[str, str] = {}
        body = b""
        if request.method not in SAFE_METHODS:
            body = await read_body(request)
            if body is None:
                await plain(413, ERROR_MESSAGES[413])(scope, receive, send)
                return
            if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
                try:
                    for key, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True,
                                                max_num_fields=MAX_FORM_FIELDS):
                        form.setdefault(key, value)   # the first value counts, as in every HTML form here
                except ValueError:
                    await plain(400, f"a form holds at most {MAX_FORM_FIELDS} fields")(scope, receive, send)
                    return
            # The cookie is sent by the browser on its own; the token from the page is not.
            if not via_token and not auth.same_token(session.get("csrf"), form.get("csrf_token")):
                await plain(403, "missing or wrong CSRF token: reload the page and try again")(scope, receive, send)
                return
        if user is None and not is_public(request.url.path):
            if credentials.users and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                await RedirectResponse("/login?" + urlencode({"next": wanted}), 302)(scope, receive, send)
                return
            await plain(401, "log in first (or send Authorization: Bearer TOKEN)", bearer=True)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.update(user=user, via_token=via_token, form=form)
        await self.app(scope, replay(body, receive), send)


async def read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than any form of this server (refused before reading it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the already-read body on once, then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> Message:
        return pending.pop() if pending else await receive()
    return receive_again


def plain(status: int, text: str, bearer: bool = False) -> PlainTextResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="facedeblur"'} if bearer else None
    return PlainTextResponse(text + "\n", status, headers)


class SecurityHeaders:
    """The same security headers on every response: pages, files, errors and the gate's refusals."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", PAGE_CSP)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Cross-Origin-Resource-Policy"] = "same-origin"
                if headers.get("content-type", "").split(";")[0] == "text/html" and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"   # pages carry marks and CSRF tokens: never cache them
            await send(message)
        await self.app(scope, receive, send_with_headers)


class ErrorPage:
    """A plain 500 for an unexpected error, sent inside SecurityHeaders so it carries the security headers
    (Starlette's own error middleware sits outside every user middleware); the traceback goes to the log."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, watch)
        except Exception:
            logging.getLogger(__name__).exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await plain(500, "Internal error: the server log has the details.")(scope, receive, send)


@dataclass
class ServerParts:
    outbox: Path
    state: Path
    exports: Path
    settings: ServeSettings
    credentials: auth.Credentials


def create_app(parts: ServerParts) -> Starlette:
    catalog = Catalog(parts.outbox, parts.state)
    store = ReviewStore(parts.state)
    limiter = auth.LoginLimiter(parts.settings.login_attempts, parts.settings.login_window_seconds)
    sessions = auth.LiveSessions()
    credentials = parts.credentials
    environment = templates_environment()

    def page(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        html = environment.get_template(template).render(session=request.session,
                                                         user=getattr(request.state, "user", None), **context)
        return HTMLResponse(html, status, headers)

    def form(request: Request) -> dict[str, str]:
        return request.state.form

    def user_of(request: Request) -> str:
        return request.state.user

    # ---- login --------------------------------------------------------------------------------------------
    def login(request: Request) -> Response:
        target = form(request).get("next") or request.query_params.get("next", "")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"   # only paths on this server: never an open redirect
        if not credentials.users:
            message = ("This server takes API tokens only (Authorization: Bearer TOKEN); add reviewers with "
                       "serve.users in config.yaml." if credentials.token else "No login is needed on this server.")
            return page(request, "error.html", 404, message=message)
        if request.method == "GET":
            return page(request, "login.html", next=target, error=None)
        name = form(request).get("user", "")[:64]
        client = f"address:{request.client.host if request.client else 'unknown'}"
        wait, attempt = limiter.begin_attempt(client, f"user:{name}")
        if wait > 0:
            return page(request, "login.html", 429, {"Retry-After": str(int(wait) + 1)}, next=target,
                        error=f"Too many failed logins: try again in {int(wait) + 1} s.")
        if not credentials.check_password(name, form(request).get("password", "")):
            return page(request, "login.html", 401, next=target, error="Wrong user name or password.")
        limiter.succeeded(attempt, client, f"user:{name}")
        request.session.clear()   # a fresh session (and CSRF token) on login: no fixation
        request.session["user"] = name
        request.session["sid"] = sessions.open(name)
        request.session["csrf"] = auth.new_csrf_token()
        return RedirectResponse(target, 302)

    def logout(request: Request) -> Response:
        sessions.close(request.session.get("sid"))   # copies of this cookie stop working too
        request.session.clear()
        return RedirectResponse(url_for("login"), 302)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    # ---- jobs ---------------------------------------------------------------------------------------------
    def jobs_list(request: Request) -> Response:
        try:
            query = JobFilter.from_args(request.query_params)
        except BadQuery as exc:
            return page(request, "error.html", 400, message=f"{exc}; fix the filter and try again.")
        listing = catalog.list_jobs(query, parts.settings.page_size)
        counts = store.counts_for_jobs([job["id"] for job in listing.jobs])
        kept = {k: v for k, v in request.query_params.items() if k != "page" and v}
        page_link = lambda number: "?" + urlencode({**kept, "page": number})
        return page(request, "list.html", listing=listing, query=query, counts=counts, page_link=page_link,
                    states=STATES)

    def job_or_404(job_id: int) -> dict[str, Any]:
        job = catalog.job(job_id)
        if job is None:
            raise HTTPException(404)
        return job

    def job_page(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = job_or_404(job_id)
        manifest = catalog.manifest(job) or {}
        marks = store.marks_for_job(job_id)
        history = store.history(job_id)
        frame_times = {}
        for track in manifest.get("tracks") or []:
            frame_times.update({f.get("frame"): f.get("time") for f in track.get("frames") or [] if isinstance(f, dict)})
        selected = {tuple(item) for item in request.session.get("case", [])}
        steps = processing_steps(manifest) if manifest else []
        return page(request, "job.html", job=job, manifest=manifest, marks=marks, history=history,
                    frame_times=frame_times, selected=selected, steps=steps)

    def job_file(request: Request) -> Response:
        job = job_or_404(request.path_params["job_id"])
        relative = request.path_params["relative"]
        try:
            fd = catalog.open_output_file(job, relative)
        except safe_files.NotServable:
            raise HTTPException(404) from None
        return send_fd(request, fd, relative)

    def job_thumbnail(request: Request) -> Response:
        job = job_or_404(request.path_params["job_id"])
        thumbnail = catalog.thumbnail_parts(job)
        if thumbnail is None:
            raise HTTPException(404)
        try:
            fd = safe_files.open_below(catalog.outbox, thumbnail)
        except safe_files.NotServable:
            raise HTTPException(404) from None
        return send_fd(request, fd, thumbnail[-1])

    def mark_track(request: Request) -> Response:
        job_id, track_id = request.path_params["job_id"], request.path_params["track_id"]
        job = job_or_404(job_id)
        track_ids = {t.get("id") for t in (catalog.manifest(job) or {}).get("tracks") or []}
        if track_id not in track_ids:
            raise HTTPException(404)
        fields = form(request)
        status = fields.get("status", "")
        if status not in MARK_STATES:
            return page(request, "error.html", 400, message=f"status {status!r} is not one of "
                        f"{', '.join(MARK_STATES)}; pick one from the list.")
        try:
            seen = int(fields.get("version", ""))
        except ValueError:
            return page(request, "error.html", 400, message="the form has no version; reload the page and mark again.")
        try:
            store.set_mark(job_id, track_id, status, fields.get("note", ""), user_of(request), seen)
        except StaleMark as stale:
            return page(request, "conflict.html", 409, job=job, current=stale.current,
                        mine={"status": status, "note": fields.get("note", "")})
        return RedirectResponse(url_for("job_page", job_id=job_id) + f"#track-{track_id}", 303)

    # ---- case export --------------------------------------------------------------------------------------
    def case_toggle(request: Request) -> Response:
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
            return page(request, "error.html", 400, message=f"a case holds at most {MAX_CASE_ITEMS} tracks; export "
                        "this one and start another.")
        else:
            case.append(item)
        request.session["case"] = case
        return RedirectResponse(url_for("job_page", job_id=item[0]) + f"#track-{item[1]}", 303)

    def case_page(request: Request) -> Response:
        return page(request, "case.html", case=sorted(tuple(x) for x in request.session.get("case", [])))

    def case_clear(request: Request) -> Response:
        request.session["case"] = []
        return RedirectResponse(url_for("case_page"), 303)

    def case_export(request: Request) -> Response:
        selection = [tuple(x) for x in request.session.get("case", [])]
        try:
            result = build_case(catalog, store, selection, parts.exports, environment,
                                int(parts.settings.export_max_input_mb * 1024 * 1024))
        except ExportError as exc:
            return page(request, "error.html", 400, message=str(exc))
        store.record_export(user_of(request), {"case": result.case_id, "zip_sha256": result.zip_sha256,
                                               "selection": sorted(selection)})
        return RedirectResponse(url_for("case_done", case_id=result.case_id), 303)

    def case_folder(case_id: str) -> str:
        if not CASE_ID.match(case_id):
            raise HTTPException(404)
        return f"case-{case_id}"

    def case_done(request: Request) -> Response:
        case_id = request.path_params["case_id"]
        folder = case_folder(case_id)
        try:
            with case_lock(case_id):   # the folder and the zip of one export, never one from each
                sums = safe_files.read_below(parts.exports, [folder, "SHA256SUMS"], 16 * 1024 * 1024).decode()
                fd = safe_files.open_below(parts.exports, [f"{folder}.zip"])
        except safe_files.NotServable:
            raise HTTPException(404) from None
        zip_sha = sha256_fd(fd)
        files = [line.split("  ", 1) for line in sums.splitlines() if "  " in line]
        return page(request, "case_done.html", case_id=case_id, files=files, zip_sha256=zip_sha)

    def case_download(request: Request) -> Response:
        folder = case_folder(request.path_params["case_id"])
        try:
            with case_lock(request.path_params["case_id"]):
                fd = safe_files.open_below(parts.exports, [f"{folder}.zip"])
        except safe_files.NotServable:
            raise HTTPException(404) from None
        return send_fd(request, fd, f"{folder}.zip", attachment=True)

    def case_file(request: Request) -> Response:
        folder = case_folder(request.path_params["case_id"])
        relative = request.path_params["relative"]
        try:
            with case_lock(request.path_params["case_id"]):
                fd = safe_files.open_below(parts.exports, [folder, *safe_files.checked_parts(relative)])
        except safe_files.NotServable:
            raise HTTPException(404) from None
        return send_fd(request, fd, relative)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = ERROR_MESSAGES.get(exc.status_code, exc.detail)
        return page(request, "error.html", exc.status_code, dict(exc.headers or {}), message=message)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # serve.threads bounds how many requests do blocking SQLite and file work at once (anyio's default is 40).
        anyio.to_thread.current_default_thread_limiter().total_tokens = parts.settings.threads
        yield

    routes = [
        Route("/healthz", healthz, name="healthz"),
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/", jobs_list, name="jobs_list"),
        Route("/jobs/{job_id:int}", job_page, name="job_page"),
        Route("/jobs/{job_id:int}/files/{relative:path}", job_file, name="job_file"),
        Route("/jobs/{job_id:int}/thumbnail", job_thumbnail, name="job_thumbnail"),
        Route("/jobs/{job_id:int}/tracks/{track_id:int}/mark", mark_track, methods=["POST"], name="mark_track"),
        Route("/case", case_page, name="case_page"),
        Route("/case/toggle", case_toggle, methods=["POST"], name="case_toggle"),
        Route("/case/clear", case_clear, methods=["POST"], name="case_clear"),
        Route("/case/export", case_export, methods=["POST"], name="case_export"),
        Route("/cases/{case_id}", case_done, name="case_done"),
        Route("/cases/{case_id}/download", case_download, name="case_download"),
        Route("/cases/{case_id}/files/{relative:path}", case_file, name="case_file"),
        # StaticFiles refuses paths that leave its folder and, by default, symlinks that point out of it.
        Mount("/static", StaticFiles(packages=[("facedeblur.review", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(ErrorPage),
            # The key is new at each start, so a restart logs everyone out and no secret is kept on disk.
            # No max_age: a browser-session cookie, as before; SameSite=Strict keeps it off cross-site requests.
            Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32), session_cookie=SESSION_COOKIE,
                       max_age=None, same_site="strict", https_only=parts.settings.secure_cookies),
            Middleware(ReviewGate, credentials=credentials, sessions=sessions),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False   # '/jobs/1/' is a 404, not a redirect built from the Host header

    def url_for(name: str, **params: Any) -> str:
        """A path on this server (never an absolute URL built from the request's Host header)."""
        # Starlette puts parameters into the path as they are: quote them here, so a name stays one segment.
        return str(app.router.url_path_for(name, **{key: quote(value, safe="/") if isinstance(value, str) else value
                                                    for key, value in params.items()}))
    environment.globals["url_for"] = url_for
    return app


class OpenFileResponse(FileResponse):
    """Starlette's FileResponse (Range, 206, 416, HEAD) over a descriptor that safe_files already opened.

    FileResponse re-opens its path, so it is given /proc/self/fd/N: on Linux that opens the very file behind
    the descriptor, so a symlink or rename planted after safe_files' O_NOFOLLOW checks cannot change what is
    sent. The descriptor is closed once the response is over, sent or not.
    """

    def __init__(self, fd: int, info: os.stat_result, media_type: str, headers: dict[str, str],
                 filename: str | None):
        super().__init__(f"/proc/self/fd/{fd}", headers=headers, media_type=media_type, filename=filename,
                         stat_result=info)
        self.fd = fd

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)


def send_fd(request: Request, fd: int, name: str, attachment: bool = False) -> Response:
    """Send an open file with Range support (video seeking), an ETag, Last-Modified and 304 on a match."""
    try:
        info = os.fstat(fd)
        suffix = os.path.splitext(name)[1].lower()
        media_type = MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        etag = f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Content-Security-Policy": FILE_CSP}
        if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            os.close(fd)
            return Response(status_code=304, headers=headers)
    except BaseException:
        os.close(fd)
        raise
    return OpenFileResponse(fd, info, media_type, headers, os.path.basename(name) if attachment else None)
