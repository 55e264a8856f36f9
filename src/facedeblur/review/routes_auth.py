"""The login and logout pages and the health check."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import auth
from .context import ReviewContext, form


class AuthRoutes:
    def __init__(self, context: ReviewContext):
        self.context = context

    def login(self, request: Request) -> Response:
        context, credentials = self.context, self.context.credentials
        target = form(request).get("next") or request.query_params.get("next", "")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"   # only paths on this server: never an open redirect
        if not credentials.users:
            message = ("This server takes API tokens only (Authorization: Bearer TOKEN); add reviewers with "
                       "serve.users in config.yaml." if credentials.token else "No login is needed on this server.")
            return context.page(request, "error.html", 404, message=message)
        if request.method == "GET":
            return context.page(request, "login.html", next=target, error=None)
        name = form(request).get("user", "")[:64]
        client = f"address:{request.client.host if request.client else 'unknown'}"
        wait, attempt = context.limiter.begin_attempt(client, f"user:{name}")
        if wait > 0:
            return context.page(request, "login.html", 429, {"Retry-After": str(int(wait) + 1)}, next=target,
                                error=f"Too many failed logins: try again in {int(wait) + 1} s.")
        if not credentials.check_password(name, form(request).get("password", "")):
            return context.page(request, "login.html", 401, next=target, error="Wrong user name or password.")
        context.limiter.succeeded(attempt, client, f"user:{name}")
        current_case = request.session.get("case")
        request.session.clear()   # a fresh session (and CSRF token) on login: no fixation
        if current_case is not None:
            request.session["case"] = current_case   # only which shared case to add to: nothing to fixate
        request.session["user"] = name
        request.session["sid"] = context.sessions.open(name)
        request.session["csrf"] = auth.new_csrf_token()
        return RedirectResponse(target, 302)

    def logout(self, request: Request) -> Response:
        self.context.sessions.close(request.session.get("sid"))   # copies of this cookie stop working too
        request.session.clear()
        return RedirectResponse(self.context.url_for("login"), 302)

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")


def auth_routes(context: ReviewContext) -> list[Route]:
    handlers = AuthRoutes(context)
    return [
        Route("/healthz", handlers.healthz, name="healthz"),
        Route("/login", handlers.login, methods=["GET", "POST"], name="login"),
        Route("/logout", handlers.logout, methods=["POST"], name="logout"),
    ]
