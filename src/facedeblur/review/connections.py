"""Limits on client connections, so that slow or many clients cannot take the review server down.

uvicorn closes an idle keep-alive connection, but it has no deadline for the request head: a client that
opens a connection and sends one header line every few seconds (slowloris) holds it, and a socket, forever.
`HeadDeadlineProtocol` adds that deadline to uvicorn's own h11 protocol class (uvicorn takes a protocol class
for its `http` setting); written here because uvicorn offers no such option. The file descriptor limit is
raised to the hard limit at start, so a thousand held connections do not exhaust the 1,024 descriptors a
process gets by default. Beyond loopback, a reverse proxy with its own header timeouts belongs in front
(docs/review.md): it absorbs such clients before they reach this one process.
"""
from __future__ import annotations

import asyncio
import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a client has to send a whole request head (request line and headers), from connecting or from the
# end of the previous response on a kept-alive connection. A browser sends it in one packet.
REQUEST_HEAD_SECONDS = 10.0
# Connections plus running requests at once; above it uvicorn answers 503 at once instead of queueing work.
MAX_CONCURRENCY = 4096
# What the process needs for MAX_CONCURRENCY sockets plus files being served; systemd/facedeblur-serve.service
# sets LimitNOFILE to this.
WANTED_OPEN_FILES = 16384


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete in time."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_head_deadline()   # the head is in: the request runs under the app's own limits

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_deadline()      # the next request on a kept-alive connection has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(REQUEST_HEAD_SECONDS, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files towards WANTED_OPEN_FILES (up to the hard limit); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(WANTED_OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft
