"""The only way out for Chromium: a forward proxy on 127.0.0.1 that applies the harvester's own checks to
every request the browser makes (scripts, stylesheets, frames, fetch, sendBeacon, workers).

A rendered page runs its own scripts, and Chromium does not know which hosts the harvester refuses: without
this, a public page could make the browser reach the router, a metadata service or any other private host,
POSTs included. Chromium is started with this proxy for every scheme and for loopback too
(`--proxy-bypass-list=<-loopback>`), and WebRTC may not send UDP outside it, so nothing the page asks for
leaves the browser unchecked:
* http:// requests are checked like the harvester's own (scheme, address, robots.txt) and then forwarded;
* https:// requests arrive as CONNECT host:port; the proxy cannot see their path (the browser's URL block
  list still applies robots.txt there), but the host's address is checked before the tunnel opens.
A refused request gets 403 and never reaches the network. Written here because the rule to apply is the
harvester's own (Fetcher) and the proxy needs nothing beyond the standard library; no proxy library offers
more than this for it.
"""
from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .checks import Skipped

log = logging.getLogger(__name__)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
              "trailer", "transfer-encoding", "upgrade"}
MAX_REQUEST_BODY = 10 * 1024 * 1024   # a form or beacon; a page uploading more is not what a harvest needs
CHUNK = 64 * 1024


class GuardProxy:
    """A threaded forward proxy on 127.0.0.1. `check_url(url)` and `check_host(url)` raise Skipped to refuse
    a request (an http URL, or https://host:port/ of a CONNECT); they run under one lock. `open_connection(host,
    port, timeout)` opens every upstream socket, raising Skipped to refuse the address it resolves to."""

    def __init__(self, check_url: Callable[[str], None], check_host: Callable[[str], None],
                 open_connection: Callable[[str, int, float], socket.socket], timeout: float):
        lock = threading.Lock()

        def allowed(check: Callable[[str], None], url: str) -> str | None:
            with lock:
                try:
                    check(url)
                except Skipped as skipped:
                    return str(skipped)
            return None

        handler = type("GuardHandler", (_GuardHandler,), {
            "refusal_of_url": staticmethod(lambda url: allowed(check_url, url)),
            "refusal_of_host": staticmethod(lambda url: allowed(check_host, url)),
            "open_upstream": staticmethod(open_connection),
            "upstream_timeout": timeout})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="harvest-browser-proxy", daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _GuardHandler(BaseHTTPRequestHandler):
    refusal_of_url: Callable[[str], str | None]
    refusal_of_host: Callable[[str], str | None]
    open_upstream: Callable[[str, int, float], socket.socket]
    upstream_timeout: float

    def log_message(self, format: str, *args) -> None:
        log.debug("browser proxy: " + format, *args)

    def _refuse(self, why: str) -> None:
        log.info("browser request refused: %s", why)
        self.send_error(403, "refused by the harvester")
        self.close_connection = True

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        if not host or not port.isdigit():
            self.send_error(400)
            return
        # Written as the harvester writes the host of an https URL (no :443), so a named host matches.
        why = self.refusal_of_host(f"https://{host}/" if port == "443" else f"https://{host}:{port}/")
        if why is not None:
            self._refuse(why)
            return
        upstream = self._connect_upstream(host, int(port))
        if upstream is None:
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        _tunnel(self.connection, upstream, self.upstream_timeout)

    def _connect_upstream(self, host: str, port: int) -> socket.socket | None:
        """The upstream socket, or None after answering 403 (a refused address) or 502 (unreachable)."""
        try:
            return self.open_upstream(host, port, self.upstream_timeout)
        except Skipped as skipped:
            self._refuse(str(skipped))
        except OSError:
            self.send_error(502)
        return None

    def _forward(self) -> None:
        url = self.path
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            self._refuse(f"{url[:200]} is not an absolute http:// URL")
            return
        why = self.refusal_of_url(url)
        if why is not None:
            self._refuse(why)
            return
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length and not length.isdigit()):
            self.send_error(411)
            return
        if length and int(length) > MAX_REQUEST_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(int(length)) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._connect_upstream(parts.hostname, parts.port or 80)
        if connection is None:
            return
        upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.upstream_timeout)
        upstream.sock = connection
        try:
            upstream.request(self.command, target, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := response.read1(CHUNK):
                    self.wfile.write(chunk)
        except (OSError, http.client.HTTPException):
            self.close_connection = True
            return
        finally:
            upstream.close()
        self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward


def _tunnel(client: socket.socket, upstream: socket.socket, idle: float) -> None:
    """Copy bytes both ways until one side closes or nothing moves for `idle` seconds."""
    sockets = [client, upstream]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], idle)
            if not readable:
                return
            for source in readable:
                data = source.recv(CHUNK)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)
    except OSError:
        return
    finally:
        upstream.close()
