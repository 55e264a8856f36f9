"""Stable-input detection: a file (or frame folder) is taken only after it stopped changing.

An NVR or a copy over SMB writes a clip for seconds or minutes; events alone cannot tell when it is
finished. A candidate is stable when two looks at least `stable_seconds` apart see the same signature
(size and mtime of the file, or of every file in a frame folder). A candidate that vanishes is dropped.
"""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from ..inputs import InputChanged, is_frame_name, natural_key, sha256_of_file, sha256_of_frames
from .scanning import Unit

__all__ = ["InputChanged", "Signature", "StabilityTracker", "sha256_of", "signature_of"]


@dataclass(frozen=True)
class Signature:
    size: int
    mtime_ns: int
    files: tuple[tuple[str, int, int], ...] = ()   # (relative name, size, mtime_ns) for a frame folder


def signature_of(unit: Unit, follow_symlinks: bool = False) -> Signature | None:
    """None when the input is gone (or is no longer what it was: a file swapped for a symlink, with
    `follow_symlinks` false, is gone). A frame folder's signature covers its frames (inputs.is_frame_name,
    what the pipeline reads); symlinks in it are not part of it."""
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
                if is_frame_name(entry.name) and entry.is_file(follow_symlinks=follow_symlinks):
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


def sha256_of(unit: Unit, signature: Signature, follow_symlinks: bool = False) -> str:
    """The input's content hash, the same as the manifest's `input.sha256` (inputs.sha256_of_input); every
    file read must still be the one the signature saw (InputChanged otherwise)."""
    if unit.kind == "file":
        return sha256_of_file(unit.path, (signature.size, signature.mtime_ns), follow_symlinks)
    expected = {name: (size, mtime_ns) for name, size, mtime_ns in signature.files}
    files = sorted((unit.path / name for name in expected), key=lambda p: natural_key(p.name))
    return sha256_of_frames(files, expected, follow_symlinks)


@dataclass
class _Watch:
    signature: Signature | None
    since: float                 # when the signature was last seen to change


class StabilityTracker:
    """Candidates seen by events or rescans, promoted once their signature held still long enough."""

    def __init__(self, stable_seconds: float, follow_symlinks: bool = False):
        self.stable_seconds = stable_seconds
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
            self._watching[unit] = _Watch(signature_of(unit, self.follow_symlinks), now)
        else:
            watch.since = now
            watch.signature = signature_of(unit, self.follow_symlinks)

    def poll(self) -> tuple[list[tuple[Unit, Signature]], list[Unit]]:
        """Returns (stable units with their signature, vanished units). Both leave the tracker."""
        now = time.monotonic()
        stable: list[tuple[Unit, Signature]] = []
        vanished: list[Unit] = []
        for unit, watch in list(self._watching.items()):
            if now - watch.since < self.stable_seconds:
                continue
            current = signature_of(unit, self.follow_symlinks)
            if current is None:
                vanished.append(unit)
                del self._watching[unit]
            elif current != watch.signature:
                watch.signature, watch.since = current, now
            else:
                stable.append((unit, current))
                del self._watching[unit]
        return stable, vanished
