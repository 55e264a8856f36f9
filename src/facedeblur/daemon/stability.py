"""Stable-input detection: a file (or frame folder) is taken only after it stopped changing.

An NVR or a copy over SMB writes a clip for seconds or minutes; events alone cannot tell when it is
finished. A candidate is stable when two looks at least `stable_seconds` apart see the same signature
(size and mtime of the file, or of every file in a frame folder). A candidate that vanishes is dropped.
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..footage.manifest import CHUNK
from .scanning import Unit


@dataclass(frozen=True)
class Signature:
    size: int
    mtime_ns: int
    files: tuple[tuple[str, int, int], ...] = ()   # (relative name, size, mtime_ns) for a frame folder


def signature_of(unit: Unit, include_file, follow_symlinks: bool = False) -> Signature | None:
    """None when the input is gone (or is no longer what it was: a file swapped for a symlink, with
    `follow_symlinks` false, is gone). Symlinks in a frame folder are not part of its signature."""
    try:
        if unit.kind == "file":
            st = os.stat(unit.path, follow_symlinks=follow_symlinks)
            if not stat.S_ISREG(st.st_mode):
                return None
            return Signature(st.st_size, st.st_mtime_ns)
        if not follow_symlinks and os.path.islink(unit.path):
            return None
        entries = []
        with os.scandir(unit.path) as listing:
            for entry in listing:
                if entry.is_file(follow_symlinks=follow_symlinks) and include_file(entry.name):
                    st = entry.stat(follow_symlinks=follow_symlinks)
                    entries.append((entry.name, st.st_size, st.st_mtime_ns))
        if not entries:
            return None
        entries.sort()
        # The folder's own mtime changes when a frame is added or renamed, even if sizes happen to match.
        folder_mtime = os.stat(unit.path).st_mtime_ns
        return Signature(sum(e[1] for e in entries), max([folder_mtime] + [e[2] for e in entries]), tuple(entries))
    except OSError:
        return None


class InputChanged(OSError):
    """The file opened for hashing is not the one whose signature was taken (swapped, replaced, a link)."""


def _sha256_checked(path: Path, size: int, mtime_ns: int, follow_symlinks: bool) -> str:
    """sha256 of `path`, opened without following a final symlink (unless allowed); the opened file must be
    the regular file that was checked (same size and mtime), so a swap between the check and the read is seen."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise InputChanged(f"{path} changed or was replaced before it was read")
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(unit: Unit, signature: Signature, follow_symlinks: bool = False) -> str:
    """Content hash; for a frame folder, a hash over (name, hash of the frame) in name order."""
    if unit.kind == "file":
        return _sha256_checked(unit.path, signature.size, signature.mtime_ns, follow_symlinks)
    outer = hashlib.sha256()
    for name, size, mtime_ns in signature.files:
        outer.update(name.encode("utf-8", "surrogateescape") + b"\0")
        outer.update(_sha256_checked(unit.path / name, size, mtime_ns, follow_symlinks).encode() + b"\n")
    return outer.hexdigest()


@dataclass
class _Watch:
    signature: Signature | None
    since: float                 # when the signature was last seen to change
    first_seen: float = field(default_factory=time.monotonic)


class StabilityTracker:
    """Candidates seen by events or rescans, promoted once their signature held still long enough."""

    def __init__(self, stable_seconds: float, include_file, follow_symlinks: bool = False):
        self.stable_seconds = stable_seconds
        self.include_file = include_file
        self.follow_symlinks = follow_symlinks
        self._watching: dict[Unit, _Watch] = {}

    def __len__(self) -> int:
        return len(self._watching)

    def __contains__(self, unit: Unit) -> bool:
        return unit in self._watching

    def touch(self, unit: Unit) -> None:
        """Something happened to `unit`: (re)start its stability clock."""
        now = time.monotonic()
        watch = self._watching.get(unit)
        if watch is None:
            self._watching[unit] = _Watch(signature_of(unit, self.include_file, self.follow_symlinks), now)
        else:
            watch.since = now
            watch.signature = signature_of(unit, self.include_file, self.follow_symlinks)

    def forget(self, unit: Unit) -> None:
        self._watching.pop(unit, None)

    def poll(self) -> tuple[list[tuple[Unit, Signature]], list[Unit]]:
        """Returns (stable units with their signature, vanished units). Both leave the tracker."""
        now = time.monotonic()
        stable: list[tuple[Unit, Signature]] = []
        vanished: list[Unit] = []
        for unit, watch in list(self._watching.items()):
            if now - watch.since < self.stable_seconds:
                continue
            current = signature_of(unit, self.include_file, self.follow_symlinks)
            if current is None:
                vanished.append(unit)
                del self._watching[unit]
            elif current != watch.signature:
                watch.signature, watch.since = current, now
            else:
                stable.append((unit, current))
                del self._watching[unit]
        return stable, vanished
