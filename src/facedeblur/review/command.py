"""`facedeblur serve`: the review server, and `facedeblur serve --hash-password` to make a user's hash.

Start-up refuses, in one line each, what would be unsafe or cannot work: a bind beyond loopback without
users or a token, a token source that is set but empty, a missing outbox or state folder, no journal yet.
"""
from __future__ import annotations

import argparse
import getpass
import socket
import sys
from pathlib import Path

# The same two commands as README.md's install section: a checkout keeps its editable install.
SERVE_EXTRA_MISSING = ("the review server needs the serve extra: ./scripts/setup-venv serve in a source checkout "
                       "(or pip install -e '.[cpu,serve]'), pip install 'facedeblur[serve]' from a package index")


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="review web server: browse jobs, mark tracks, export cases",
        description="Serve the daemon's outbox and journal to reviewers in a browser: jobs list, job pages with "
                    "video and before/after faces, review marks with an audit log, case export with a report. "
                    "See docs/review.md.")
    serve.add_argument("--config", type=Path, metavar="FILE", help="config.yaml (daemon: and serve: sections)")
    serve.add_argument("--host", metavar="H", help="address to bind; overrides serve.host (loopback unless configured)")
    serve.add_argument("--port", type=int, metavar="P", help="port; overrides serve.port (0 = any free port)")
    serve.add_argument("--outbox", type=Path, metavar="DIR", help="overrides daemon.outbox")
    serve.add_argument("--state", type=Path, metavar="DIR", help="overrides daemon.state")
    serve.add_argument("--hash-password", action="store_true",
                       help="read a password (prompted, or one line on stdin) and print its hash for serve.users")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ..errors import FacedeblurError
    if args.hash_password:
        return _print_hash()
    uvicorn = _serve_extra()   # first, so a server without the extra says so before anything else
    if args.port is not None and not 0 <= args.port <= 65535:
        raise FacedeblurError(f"--port {args.port} is not a port number (0-65535)")
    from ..config import daemon_folders, load_config
    from .auth import is_loopback, load_credentials
    config = load_config(args.config)
    settings = config.serve
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    credentials = load_credentials(settings)
    if not is_loopback(host) and not credentials.configured:
        raise FacedeblurError(f"refusing to serve on {host} without authentication: add serve.users (password "
                              "hashes) or serve.token_file/token_env to the config, or bind to 127.0.0.1")
    outbox, state = daemon_folders(config, args.outbox, args.state, "serve")
    exports = settings.exports or state / "exports"
    from .app import ServerParts, create_app
    app = create_app(ServerParts(outbox=outbox, state=state, exports=Path(exports), settings=settings,
                                 credentials=credentials, pipeline=config.pipeline))
    from .connections import MAX_CONCURRENCY, HeadDeadlineProtocol, raise_open_file_limit
    open_files = raise_open_file_limit()
    listener = _listen(host, port)
    bound_port = listener.getsockname()[1]
    # One process, no reload, no worker pool: the login limiter and the session key live in this process.
    # Proxy headers stay off: X-Forwarded-For from any client would otherwise pick the address the per-address
    # login limit counts. Access logs stay off too (the audit table records every change); warnings still show.
    # Slow clients: a deadline for the request head (connections.py), a cap on connections, a short keep-alive.
    server = uvicorn.Server(uvicorn.Config(app, workers=1, reload=False, proxy_headers=False, server_header=False,
                                           access_log=False, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=10, http=HeadDeadlineProtocol,
                                           limit_concurrency=MAX_CONCURRENCY, timeout_keep_alive=5))
    # Tests and scripts read this line to learn the port when --port 0 asked for any free one.
    print(f"facedeblur review serving http://{host}:{bound_port}/ (outbox {outbox}, journal {state})",
          file=sys.stderr, flush=True)
    if not is_loopback(host):
        _warn_beyond_loopback(host, open_files)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    if not server.started:
        raise FacedeblurError("the review server stopped during start-up; the message above says why")
    return 0


def _warn_beyond_loopback(host: str, open_files: int) -> None:
    """One line at start: a server reachable from a network belongs behind a reverse proxy."""
    from .connections import REQUEST_HEAD_SECONDS
    print(f"facedeblur review: listening on {host}, beyond loopback; put a TLS reverse proxy with header and body "
          f"timeouts in front of it (docs/review.md); on its own it closes request heads slower than "
          f"{REQUEST_HEAD_SECONDS:g} s and holds at most {open_files} open files", file=sys.stderr, flush=True)


def _serve_extra():
    """uvicorn, once the whole serve extra is importable; otherwise one line saying what to install."""
    from ..errors import FacedeblurError
    import importlib
    try:
        # All of them, not only uvicorn: a half-installed extra would otherwise fail later, mid-request.
        for module in ("starlette", "jinja2", "itsdangerous", "fpdf"):
            importlib.import_module(module)
        import uvicorn
    except ImportError:
        raise FacedeblurError(SERVE_EXTRA_MISSING) from None
    return uvicorn


def _listen(host: str, port: int) -> socket.socket:
    """The bound listening socket, made here so a taken port or unknown name is one line rather than a log."""
    from ..errors import FacedeblurError
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, protocol)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # restart at once after a stop
            listener.bind(address)
            # Listening now, before the start-up line is printed, so a client that reads it can connect at
            # once; uvicorn's own listen() on this socket later only repeats it.
            listener.listen(2048)
        except OSError:
            listener.close()
            raise
    except OSError as exc:
        raise FacedeblurError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
                              "stop what holds it") from None
    return listener


def _print_hash() -> int:
    from ..errors import FacedeblurError
    from .auth import hash_password
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise FacedeblurError("the two passwords differ; run --hash-password again")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise FacedeblurError("the password is shorter than 8 characters; choose a longer one")
    print(hash_password(password))
    return 0
