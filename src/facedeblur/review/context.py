"""What every route of the review server shares: the catalog, the marks store, the login limiter, the live
sessions, the credentials and the page templates, built once per application."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Router

from ..config import PipelineSettings, ServeSettings
from . import auth
from .cases import Case
from .catalog import MAX_ROW_ID, Catalog
from .originals import Originals
from .store import ReviewStore


@dataclass
class ServerParts:
    outbox: Path
    state: Path
    exports: Path
    settings: ServeSettings
    credentials: auth.Credentials
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)   # the photo search's detector settings


@dataclass
class ReviewContext:
    parts: ServerParts
    catalog: Catalog
    store: ReviewStore
    limiter: auth.LoginLimiter
    sessions: auth.LiveSessions
    credentials: auth.Credentials
    environment: Environment
    router: Router | None = field(default=None)   # set once the application that owns the routes exists
    originals: Originals | None = field(default=None)
    # Work a route module wants done once the server starts, off the request path (each in its own thread).
    warm_ups: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def build(cls, parts: ServerParts, environment: Environment) -> ReviewContext:
        store = ReviewStore(parts.state)
        return cls(parts=parts, catalog=Catalog(parts.outbox, parts.state), store=store,
                   limiter=auth.LoginLimiter(parts.settings.login_attempts, parts.settings.login_window_seconds),
                   sessions=auth.LiveSessions(store), credentials=parts.credentials, environment=environment,
                   originals=Originals(parts.state))

    def page(self, request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        html = self.environment.get_template(template).render(session=request.session,
                                                              user=getattr(request.state, "user", None),
                                                              current_case=self.current_case(request), **context)
        return HTMLResponse(html, status, headers)

    def current_case(self, request: Request) -> Case | None:
        """The case this browser adds tracks to (its id is in the session; the case itself is shared)."""
        case_id = request.session.get("case")
        if not isinstance(case_id, int) or isinstance(case_id, bool) or not 0 < case_id <= MAX_ROW_ID:
            return None
        return self.store.case(case_id)

    def url_for(self, name: str, **params: Any) -> str:
        """A path on this server (never an absolute URL built from the request's Host header)."""
        assert self.router is not None, "url_for before the application was built"
        # Starlette puts parameters into the path as they are: quote them here, so a name stays one segment.
        return str(self.router.url_path_for(name, **{key: quote(value, safe="/") if isinstance(value, str) else value
                                                     for key, value in params.items()}))

    def job_or_404(self, job_id: int) -> dict[str, Any]:
        job = self.catalog.job(job_id)
        if job is None:
            raise HTTPException(404)
        return job


def form(request: Request) -> dict[str, str]:
    """The urlencoded form, read and CSRF-checked by the gate before any route runs."""
    return request.state.form


def user_of(request: Request) -> str:
    return request.state.user
