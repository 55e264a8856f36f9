"""Sending a file that safe_files opened: Range requests, ETag and 304, a sandboxing CSP, and one rule for
turning a file that may not be served into a 404."""
from __future__ import annotations

import contextlib
import mimetypes
import os
from collections.abc import Iterator

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from . import safe_files

MEDIA_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".json": "application/json", ".pdf": "application/pdf",
               ".zip": "application/zip", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
# A served file (a job's gallery, an exported report) may be HTML but never runs anything: no scripts, no forms,
# no plugins, no popups, no navigation of the top window. The sandbox keeps the server's origin
# (allow-same-origin) because an opaque origin makes every image of the page a cross-origin request, which
# Cross-Origin-Resource-Policy: same-origin then blocks. Without allow-scripts that is safe: only a script could
# use the origin (read marks or CSRF tokens), and none runs.
FILE_CSP = ("default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; form-action 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; sandbox allow-same-origin")


@contextlib.contextmanager
def open_or_404() -> Iterator[None]:
    """Around the opening of a file: one that safe_files refuses (missing, outside, a symlink) is a 404."""
    try:
        yield
    except safe_files.NotServable:
        raise HTTPException(404) from None


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
