"""Stable-input detection: a file (or frame folder) is taken only after it stopped changing.

An NVR or a copy over SMB writes a clip for seconds or minutes; events alone cannot tell when it is
finished. A candidate is stable when two looks at least `stable_seconds` apart see the same signature
(size and mtime of the file, or of every file in a frame folder). A candidate that vanishes is dropped.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..footage.manifest import sha256_of_file
from .scanning import Unit


@dataclass(frozen=True)
class Signature:
    size: int
    mtime_ns: int
    files: tuple[tuple[str, int, int], ...] = ()   # (relative name, size, mtime_ns) for a frame folder


def signature_of(unit: Unit, include_file) -> Signature | None:
    """None when the input is gone (or is no longer what it was)."""
    try:
        if unit.kind == "file":
            st = os.stat(unit.path)
            if not os.path.isfile(unit.path):
                return None
            return Signature(st.st_size, st.st_mtime_ns)
        entries = []
        with os.scandir(unit.path) as listing:
            for entry in listing:
                if entry.is_file() and include_file(entry.name):
                    st = entry.stat()
                    entries.append((entry.name, st.st_size, st.st_mtime_ns))
        if not entries:
            return None
        entries.sort()
        # The folder's own mtime changes when a frame is added or renamed, even if sizes happen to match.
        folder_mtime = os.stat(unit.path).st_mtime_ns
        return Signature(sum(e[1] for e in entries), max([folder_mtime] + [e[2] for e in entries]), tuple(entries))
    except OSError:
        return None


def sha256_of(unit: Unit, signature: Signature) -> str:
    """Content hash; for a frame folder, a hash over (name, hash of the frame) in name order."""
    if unit.kind == "file":
        return sha256_of_file(unit.path)
    outer = hashlib.sha256()
    for name, _, _ in signature.files:
        outer.update(name.encode("utf-8", "surrogateescape") + b"\0")
        outer.update(sha256_of_file(unit.path / name).encode() + b"\n")
    return outer.hexdigest()


@dataclass
class _Watch:
    signature: Signature | None
    since: float                 # when the signature was last seen to change
    first_seen: float = field(default_factory=time.monotonic)


class StabilityTracker:
    """Candidates seen by events or rescans, promoted once their signature held still long enough."""

    def __init__(self, stable_seconds: float, include_file):
        self.stable_seconds = stable_seconds
        self.include_file = include_file
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
            self._watching[unit] = _Watch(signature_of(unit, self.include_file), now)
        else:
            watch.since = now
            watch.signature = signature_of(unit, self.include_file)

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
            current = signature_of(unit, self.include_file)
            if current is None:
                vanished.append(unit)
                del self._watching[unit]
            elif current != watch.signature:
                watch.signature, watch.since = current, now
            else:
                stable.append((unit, current))
                del self._watching[unit]
        return stable, vanished
