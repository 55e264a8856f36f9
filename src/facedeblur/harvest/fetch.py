"""HTTP(S) downloads for the harvester, with the web's usual traps closed.

* Only http and https, at the start and at every redirect hop: urllib would follow a redirect to ftp://,
  so redirects are not left to it but followed here, each hop checked against the scheme, robots.txt and
  the host's pace, at most MAX_REDIRECTS of them.
* No URL with credentials in it (no logins), no cookies, no file:, data: or ftp: handlers at all.
* A host that resolves to a loopback, private or link-local address is fetched only when the user named
  it (a start page or a URL-list entry on an intranet): a public page cannot point the harvester at the
  router, a cloud metadata service or anything else inside the user's network. The rule is applied again
  to the very addresses each connection is opened to (`Fetcher.open_connection`), so a name whose DNS
  answers a public address for the check and a private one for the connection (DNS rebinding) is refused.
* A Content-Length above the byte limit is refused before the body is read; a body without one is read up
  to the limit and dropped when it goes past it; a server dribbling bytes is cut off at the overall timeout
  (checked after every packet received).
* A robots.txt Crawl-delay above MAX_CRAWL_DELAY skips the host with a reason instead of stalling the harvest.
* The content type is checked from the headers, before the body is read.
* No Accept-Encoding is sent, so nothing is decompressed here (no gzip bombs).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from .checks import (CRAWL_DELAY, HTTP_ERROR, NOT_AN_IMAGE, NOT_HTTP, PRIVATE_ADDRESS, ROBOTS, TOO_LARGE,
                     Skipped, content_type_is_image)
from .politeness import MAX_ROBOTS_BYTES, HostPacer, SiteRules, host_key, origin
from .settings import MAX_CRAWL_DELAY, MAX_REDIRECTS, USER_AGENT, HarvestSettings

CHUNK = 64 * 1024
PAGE_TYPES = ("text/html", "application/xhtml+xml")


def all_public(infos: list[tuple]) -> bool:
    """Whether every address of a getaddrinfo answer is a public (global) one: the private-address rule."""
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_global for info in infos)


def _resolve(host: str | None, port: int) -> list[tuple]:
    """getaddrinfo's TCP answer for host:port; Skipped when the name does not resolve."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Skipped(HTTP_ERROR, f"cannot resolve {host}: {error}") from None


def _checked_connection_class(base: type[http.client.HTTPConnection], open_connection) -> type:
    """`base` (http.client's HTTP or HTTPS connection) opening its socket through `open_connection`. The
    connection's socket factory is replaced, not its connect(), so TLS, proxies and tunnels stay http.client's."""
    class Checked(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = lambda address, timeout, source_address=None: open_connection(*address, timeout)
    return Checked


class _CheckedConnections:
    """Mixed into urllib's HTTP and HTTPS handlers: their connections open sockets through `open_connection`."""

    def __init__(self, open_connection):
        super().__init__()
        self.open_connection = open_connection

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_checked_connection_class(http_class, self.open_connection), req, **kwargs)


class _CheckedHTTPHandler(_CheckedConnections, urllib.request.HTTPHandler):
    pass


class _CheckedHTTPSHandler(_CheckedConnections, urllib.request.HTTPSHandler):
    pass


def normalise_url(url: str) -> str:
    """The URL without its fragment, with any non-ASCII characters percent-encoded (as browsers send them)."""
    parts = urlsplit(url.strip())
    cleaned = urlunsplit((parts.scheme.lower(), parts.netloc, parts.path, parts.query, ""))
    return quote(cleaned, safe=":/?&=%@+,;!$'()*[]~#")


def refuse_unsafe_url(url: str) -> None:
    """Raises Skipped unless the URL is plain http(s) to a named host, without credentials."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise Skipped(NOT_HTTP, f"{parts.scheme or 'no'} scheme; only http and https are fetched")
    if not parts.hostname:
        raise Skipped(NOT_HTTP, "no host in the URL")
    if parts.username is not None or parts.password is not None:
        raise Skipped(NOT_HTTP, "credentials in the URL; logins are never used")
    try:
        parts.port
    except ValueError:
        raise Skipped(NOT_HTTP, "the port is not a number from 1 to 65535") from None


@dataclass
class Response:
    url: str             # after redirects
    status: int
    content_type: str
    data: bytes          # empty for a page (the browser renders it)
    is_page: bool = False


class Fetcher:
    """Every request the harvester makes itself (robots.txt, images, URL-list entries) goes through here."""

    def __init__(self, settings: HarvestSettings, pacer: HostPacer | None = None):
        self.settings = settings
        self.pacer = pacer or HostPacer()
        self.rules: dict[str, SiteRules] = {}
        self.named_hosts: set[str] = set()   # hosts the user gave (start pages, URL lists): may be private
        self._address_checked: dict[str, bool] = {}
        # A proxy from the environment (http_proxy, https_proxy) is the user's own choice, like a named host.
        self._proxy_hosts = {(urlsplit(address).hostname or "").lower()
                             for scheme, address in urllib.request.getproxies().items() if scheme != "no"}
        # Only the HTTP(S) handlers: no file:, ftp: or data: opener exists, and 3xx stays an error for us to follow.
        self.opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.ProxyHandler(), _CheckedHTTPHandler(self.open_connection),
                        _CheckedHTTPSHandler(self.open_connection),
                        urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
            self.opener.add_handler(handler)

    def site_rules(self, url: str) -> SiteRules:
        """robots.txt of the URL's origin, fetched once (itself paced, never subject to robots)."""
        key = origin(url)
        if key not in self.rules:
            url = f"{key}/robots.txt"
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        response = self._request(url, MAX_ROBOTS_BYTES, delay=self.settings.delay)
                        break
                    except _Redirect as redirect:  # http -> https and the like; the target is checked by _request
                        url = normalise_url(urljoin(url, redirect.location))
                else:
                    raise Skipped(HTTP_ERROR, "robots.txt redirects too often")
                self.rules[key] = SiteRules(response.data.decode("utf-8", "replace"))
            except _HTTPStatus as status:
                # RFC 9309: robots.txt missing or forbidden (4xx) -> no rules; server error -> stay away.
                self.rules[key] = SiteRules(None, allow_all=status.code < 500, deny_all=status.code >= 500)
            except Skipped:
                self.rules[key] = SiteRules(None, deny_all=True)
        return self.rules[key]

    def delay_for(self, url: str) -> float:
        return max(self.settings.delay, self.site_rules(url).crawl_delay)

    def check_allowed(self, url: str) -> None:
        refuse_unsafe_url(url)
        self.refuse_private_address(url)
        rules = self.site_rules(url)
        if not rules.allowed(url):
            raise Skipped(ROBOTS, f"{url} is disallowed by robots.txt")
        if rules.crawl_delay > MAX_CRAWL_DELAY:
            raise Skipped(CRAWL_DELAY, f"robots.txt of {host_key(url)} asks for {rules.crawl_delay:g} s between "
                                       f"requests, above the {MAX_CRAWL_DELAY:g} s the harvester waits")

    def get(self, url: str, accept_page: bool = False) -> Response:
        """An image's bytes, following redirects hop by hop. With `accept_page`, an HTML answer comes back as
        a page (no body read) for the browser to render. Raises Skipped."""
        for _ in range(MAX_REDIRECTS + 1):
            self.check_allowed(url)
            try:
                return self._request(url, self.settings.max_bytes, delay=self.delay_for(url), accept_page=accept_page,
                                     image=True)
            except _Redirect as redirect:
                url = normalise_url(urljoin(url, redirect.location))
            except _HTTPStatus as status:
                raise Skipped(HTTP_ERROR, f"HTTP {status.code}") from None
        raise Skipped(HTTP_ERROR, f"more than {MAX_REDIRECTS} redirects")

    def refuse_private_address(self, url: str) -> None:
        """Raises Skipped when the host resolves to a non-public address and the user did not name it."""
        parts, host = urlsplit(url), host_key(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if self._may_be_private((parts.hostname or "").lower(), port):
            return
        if host not in self._address_checked:
            self._address_checked[host] = all_public(_resolve(parts.hostname, port))
        if not self._address_checked[host]:
            raise Skipped(PRIVATE_ADDRESS, f"{host} is inside the local network and was not given as a source")

    def _may_be_private(self, name: str, port: int) -> bool:
        """Whether the user gave this host (as host:port, or bare for a default port), or it is their proxy."""
        written = f"[{name}]" if ":" in name else name
        return (f"{written}:{port}" in self.named_hosts or name in self._proxy_hosts
                or (port in (80, 443) and written in self.named_hosts))

    def open_connection(self, host: str, port: int, timeout: float | None = None) -> socket.socket:
        """A TCP connection to host:port, opened to an address of the same DNS answer the private-address rule
        was applied to: every connection the harvester or its browser makes goes through here. Raises Skipped
        (refused or unresolvable) or OSError (could not connect)."""
        name = host.strip("[]").lower()
        infos = _resolve(name, port)
        if not self._may_be_private(name, port) and not all_public(infos):
            raise Skipped(PRIVATE_ADDRESS, f"{name} is inside the local network and was not given as a source")
        failure: OSError = OSError(f"no address to connect to for {name}")
        for family, kind, protocol, _, address in infos:
            connection = socket.socket(family, kind, protocol)
            try:
                if isinstance(timeout, (int, float)):  # http.client may pass its 'global default' marker
                    connection.settimeout(timeout)
                connection.connect(address)
                return connection
            except OSError as error:
                connection.close()
                failure = error
        raise failure

    def _request(self, url: str, max_bytes: int, delay: float, accept_page: bool = False,
                 image: bool = False) -> Response:
        refuse_unsafe_url(url)
        self.refuse_private_address(url)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"})
        deadline = time.monotonic() + self.settings.timeout
        with self.pacer.turn(host_key(url), delay):
            try:
                with self.opener.open(request, timeout=self.settings.timeout) as handle:
                    content_type = (handle.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                    if accept_page and content_type in PAGE_TYPES:
                        return Response(handle.geturl(), handle.status, content_type, b"", is_page=True)
                    if image and not content_type_is_image(content_type):
                        raise Skipped(NOT_AN_IMAGE, f"served as {content_type}")
                    declared = handle.headers.get("Content-Length")
                    if declared and declared.strip().isdigit() and int(declared) > max_bytes:
                        raise Skipped(TOO_LARGE, f"{int(declared)} bytes declared, above the limit of {max_bytes}")
                    data = _read_limited(handle, max_bytes, deadline)
                    return Response(handle.geturl(), handle.status, content_type, data)
            except urllib.error.HTTPError as error:
                location = error.headers.get("Location") if error.headers else None
                error.close()
                if error.code in (301, 302, 303, 307, 308) and location:
                    raise _Redirect(location) from None
                raise _HTTPStatus(error.code) from None
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError,
                    OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                raise Skipped(HTTP_ERROR, f"{type(error).__name__}: {reason}") from None


def _read_limited(handle, max_bytes: int, deadline: float) -> bytes:
    """The body, up to `max_bytes`, cut off at `deadline`. read1 returns what one receive brings, so the
    deadline is checked after every packet; read(CHUNK) would wait for a whole chunk, which a server
    dribbling a byte at a time can stretch to hours (each receive stays within the socket timeout)."""
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            raise Skipped(HTTP_ERROR, "download too slow (timeout)")
        chunk = handle.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise Skipped(TOO_LARGE, f"more than {max_bytes} bytes")
        chunks.append(chunk)
    if time.monotonic() > deadline:
        raise Skipped(HTTP_ERROR, "download too slow (timeout)")
    return b"".join(chunks)


class _Redirect(Exception):
    def __init__(self, location: str):
        self.location = location


class _HTTPStatus(Exception):
    def __init__(self, code: int):
        self.code = code
