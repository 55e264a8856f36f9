"""The Starlette application: pages, media with Range requests, review marks, case export, login.

Security lives here in one place per rule: the `ReviewGate` middleware checks the Host name, authenticates,
reads the (small, urlencoded) form and checks its CSRF token for every state-changing request before any
route runs; the `SecurityHeaders` middleware sets the headers (CSP without inline scripts) on every response,
errors included; Jinja2 autoescaping escapes every name and note; every file goes through safe_files (no
traversal, no symlinks). The routes live in routes_auth, routes_jobs and routes_cases over one shared
ReviewContext; they are plain (not async) functions: Starlette runs them in its thread pool, which suits the
blocking SQLite and file reads they do.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..ai_label import EDGE_ENERGY_NOTE
from ..safe_text import display_name
from . import auth
from .catalog import ROOT_FOLDER
from .context import ReviewContext, ServerParts
from .report import AI_NOTICE, utc_text
from .routes_auth import auth_routes
from .routes_cases import case_routes
from .routes_jobs import job_routes
from .routes_triage import triage_routes
from .routes_search import UPLOAD_LIMITS, search_routes
from .store import MARK_STATES

__all__ = ["ServerParts", "create_app", "templates_environment"]

SESSION_COOKIE = "facedeblur_review"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_FORM_BYTES = 64 * 1024   # the largest form is a mark with a 4000-character note
MAX_FORM_FIELDS = 50
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ERROR_MESSAGES = {400: "Bad request: the form or link is incomplete.", 404: "Not found.",
                  405: "This address does not take that method.",
                  413: "The form is too large (notes hold at most 4000 characters)."}


def templates_environment() -> Environment:
    """The Jinja2 environment of the pages and the exported report.html (autoescaped like every .html)."""
    environment = Environment(loader=PackageLoader("facedeblur.review", "templates"),
                              autoescape=select_autoescape(["html"]))
    environment.globals.update(utc=utc_text, notice=AI_NOTICE, version=__version__, shown=display_name,
                               mark_states=MARK_STATES, root_folder=ROOT_FOLDER, edge_energy_note=EDGE_ENERGY_NOTE)
    return environment


def is_public(path: str) -> bool:
    """What answers without a login: the health check, the login page and the stylesheet and script."""
    return path in ("/healthz", "/login") or path.startswith("/static/")


class ReviewGate:
    """Host check, authentication, form reading and CSRF for every request, before any route runs.

    Sets `state.user` (a user name, 'local' or 'api-token'; None while logged out), `state.via_token` and
    `state.form` (the parsed urlencoded body; routes never read the body themselves) and `state.files` (the
    files of a multipart upload, only on the paths in UPLOAD_LIMITS: name -> (file name, bytes)).
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
            user = session["user"]   # a session logged out (or expired) is not in LiveSessions
        form: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        body = b""
        if request.method not in SAFE_METHODS:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            upload_limit = UPLOAD_LIMITS.get(request.url.path) if content_type == "multipart/form-data" else None
            body = await read_body(request, upload_limit or MAX_FORM_BYTES)
            if body is None:
                await plain(413, ERROR_MESSAGES[413] if upload_limit is None else
                            f"the upload is larger than {upload_limit // 2**20} MiB; choose a smaller file")(
                    scope, receive, send)
                return
            if upload_limit is not None:
                parsed = await read_upload(scope, body, receive)
                if parsed is None:
                    await plain(400, "the upload is not a well-formed form with one file; choose the file again")(
                        scope, receive, send)
                    return
                form, files = parsed
            elif content_type == "application/x-www-form-urlencoded":
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
        state.update(user=user, via_token=via_token, form=form, files=files)
        await self.app(scope, replay(body, receive), send)


async def read_body(request: Request, limit: int = MAX_FORM_BYTES) -> bytes | None:
    """The request body, or None when it is larger than `limit` (refused before reading it when declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def read_upload(scope: Scope, body: bytes,
                      receive: Receive) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]] | None:
    """The fields and the one file of a multipart body already read (and size-checked), or None when it is
    not a well-formed multipart form with at most one file and a few small fields."""
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    try:
        async with Request(scope, replay(body, receive)).form(max_files=1, max_fields=MAX_FORM_FIELDS,
                                                              max_part_size=MAX_FORM_BYTES) as parsed:
            for key, value in parsed.multi_items():
                if isinstance(value, str):
                    form.setdefault(key, value)
                else:
                    files.setdefault(key, (value.filename or "", await value.read()))
    except (HTTPException, ValueError, KeyError):
        return None
    return form, files


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


def create_app(parts: ServerParts) -> Starlette:
    context = ReviewContext.build(parts, templates_environment())

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = ERROR_MESSAGES.get(exc.status_code, exc.detail)
        return context.page(request, "error.html", exc.status_code, dict(exc.headers or {}), message=message)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # serve.threads bounds how many requests do blocking SQLite and file work at once (anyio's default is 40).
        anyio.to_thread.current_default_thread_limiter().total_tokens = parts.settings.threads
        for warm_up in context.warm_ups:
            threading.Thread(target=warm_up, name=getattr(warm_up, "__name__", "warm-up"), daemon=True).start()
        yield

    routes = [
        *auth_routes(context),
        *job_routes(context),
        *case_routes(context),
        *triage_routes(context),
        *search_routes(context),
        # StaticFiles refuses paths that leave its folder and, by default, symlinks that point out of it.
        Mount("/static", StaticFiles(packages=[("facedeblur.review", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(ErrorPage),
            # The key is kept in the state folder (0600), so a restart logs no one out; logins themselves are
            # in the review database, where logout revokes them. No max_age: a cookie for the browser session
            # only; SameSite=Strict keeps it off cross-site requests.
            Middleware(SessionMiddleware, secret_key=auth.session_key(parts.state), session_cookie=SESSION_COOKIE,
                       max_age=None, same_site="strict", https_only=parts.settings.secure_cookies),
            Middleware(ReviewGate, credentials=context.credentials, sessions=context.sessions),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False   # '/jobs/1/' is a 404, not a redirect built from the Host header
    context.router = app.router
    context.environment.globals["url_for"] = context.url_for
    return app
