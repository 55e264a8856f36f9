"""Open a file below a root folder so that nothing outside it can ever be reached.

Every path component is opened relative to its parent's descriptor with O_NOFOLLOW, so a `..`, an absolute
path, or a symlink anywhere below the root (even one planted after a check) is refused rather than followed.
The root itself may be a symlink: that is the administrator's choice in config.yaml, not user input.
An inbox file recorded by the journal is opened only while it is still a regular file of the recorded size
(open_recorded_input), for the case export and the original beside the restored alike.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


class NotServable(Exception):
    """The requested path is not a regular file inside the root (missing, traversal, symlink, a folder)."""


def checked_parts(relative: str) -> list[str]:
    """The components of a URL path, refusing empty, '.', '..', NUL and backslash tricks."""
    parts = relative.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part or "\\" in part:
            raise NotServable(f"refused path component {part!r}")
    return parts


def open_below(root: Path, parts: list[str]) -> int:
    """A read-only descriptor of the regular file root/parts[0]/.../parts[-1], walked without following links."""
    if not parts:
        raise NotServable("empty path")
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise NotServable(f"root unavailable: {exc.strerror}") from None
    try:
        for part in parts[:-1]:
            try:
                following = os.open(part, flags_dir, dir_fd=current)
            except OSError as exc:
                raise NotServable(f"{part!r}: {exc.strerror}") from None
            os.close(current)
            current = following
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=current)
        except OSError as exc:
            raise NotServable(f"{parts[-1]!r}: {exc.strerror}") from None
    finally:
        os.close(current)
    if not stat.S_ISREG(os.fstat(fd).st_mode):   # O_NONBLOCK above: a FIFO planted here cannot hang the open
        os.close(fd)
        raise NotServable("not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_below(root: Path, parts: list[str], limit: int) -> bytes:
    fd = open_below(root, parts)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise NotServable(f"larger than {limit} bytes")
    return data


def list_below(root: Path, parts: list[str]) -> list[str]:
    """Names in the folder root/parts (no links followed on the way); [] when it is not there."""
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        for part in parts:
            try:
                following = os.open(part, flags_dir, dir_fd=current)
            except OSError:
                return []
            os.close(current)
            current = following
        return sorted(os.listdir(current))
    finally:
        os.close(current)


class InputUnusable(Exception):
    """The inbox file is not the one that was processed; the message says why, for the report."""


def open_recorded_input(path: Path, recorded_size: int) -> int:
    """A blocking descriptor of the inbox file, only when it is still a regular file of the recorded size.

    The inbox is writable by whoever drops footage: the file may since have been swapped for a FIFO (a plain
    open would wait for a writer forever), a symlink, or a much larger file. O_NONBLOCK makes the open of a
    FIFO return at once, and fstat on the open descriptor decides, so a swap after the check changes nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputUnusable(f"no longer readable in the inbox ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputUnusable("no longer a regular file in the inbox")
        if info.st_size != recorded_size:
            raise InputUnusable(f"now {info.st_size} bytes in the inbox, not the {recorded_size} bytes processed")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
