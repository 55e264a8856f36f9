"""What in an inbox counts as an input: include/ignore patterns, symlinks, and frame-sequence folders.

An input ("unit") is either one file (a clip or a photo) or one folder of frames. The rule for folders:
a subfolder of an inbox that directly holds image files and no video files is a frame sequence and is
one job; its images are not separate jobs. Images directly in the inbox, or beside videos, are single
photos. Symlinks are skipped unless `follow_symlinks` is set, because a link can point anywhere on the
machine (another user's files, /etc) and the daemon must only read what was dropped into the inbox.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import DaemonSettings
from ..inputs import is_image_name, is_video_name

log = logging.getLogger("facedeblur.daemon")


@dataclass(frozen=True)
class Unit:
    path: Path     # absolute path (file, or frame folder)
    inbox: Path    # the inbox it belongs to
    kind: str      # 'file' or 'frames'

    @property
    def rel_path(self) -> str:
        return self.path.relative_to(self.inbox).as_posix()


class InputRules:
    def __init__(self, settings: DaemonSettings):
        self.settings = settings
        self.include = [p.lower() for p in settings.include]
        self.ignore = [p.lower() for p in settings.ignore]
        self._warned_symlinks: set[Path] = set()

    def ignored_name(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.ignore)

    def included_file(self, name: str) -> bool:
        lowered = name.lower()
        return not self.ignored_name(name) and any(fnmatch.fnmatchcase(lowered, p) for p in self.include)

    def inbox_of(self, path: Path) -> Path | None:
        for inbox in self.settings.inbox:
            inbox = inbox.absolute()
            if path == inbox or inbox in path.parents:
                return inbox
        return None

    def path_ignored(self, path: Path, inbox: Path) -> bool:
        """Any ignored component (a hidden folder, @eaDir...) hides everything below it."""
        try:
            parts = path.relative_to(inbox).parts
        except ValueError:
            return True
        if not self.settings.recursive and len(parts) > 2:
            return True
        return any(self.ignored_name(part) for part in parts)

    def _symlink_allowed(self, path: Path) -> bool:
        if not path.is_symlink():
            return True
        if self.settings.follow_symlinks:
            return True
        if path not in self._warned_symlinks:
            self._warned_symlinks.add(path)
            log.warning("event=symlink_skipped path=%r reason=%r", str(path),
                        "symlinks are not followed (set daemon.follow_symlinks: true to allow)")
        return False

    def _listing(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return list(entries)
        except OSError:
            return []

    def is_frame_folder(self, folder: Path, inbox: Path) -> bool:
        if not self.settings.frame_folders or folder == inbox:
            return False
        images = 0
        for entry in self._listing(folder):
            if not self.included_file(entry.name):
                continue
            if is_video_name(entry.name):
                return False
            if is_image_name(entry.name):
                images += 1
        return images > 0

    def unit_for(self, path: Path) -> Unit | None:
        """The input that a changed path belongs to, or None when the daemon should not take it."""
        path = Path(os.path.abspath(path))
        inbox = self.inbox_of(path)
        if inbox is None or path == inbox or self.path_ignored(path, inbox):
            return None
        if not self._symlink_allowed(path):
            return None
        if path.is_dir():
            return Unit(path, inbox, "frames") if self.is_frame_folder(path, inbox) else None
        parent = path.parent
        if parent != inbox and self.is_frame_folder(parent, inbox):
            return Unit(parent, inbox, "frames") if self._symlink_allowed(parent) else None
        if self.included_file(path.name) and (path.is_file() or not path.exists()):
            return Unit(path, inbox, "file")
        return None

    def scan(self, folder: Path, inbox: Path) -> Iterator[Unit]:
        """Every input under `folder` (an inbox or a folder that just appeared in one)."""
        folder = Path(os.path.abspath(folder))
        if folder != inbox and (self.path_ignored(folder, inbox) or not self._symlink_allowed(folder)):
            return
        if self.is_frame_folder(folder, inbox):
            yield Unit(folder, inbox, "frames")
            return
        for entry in sorted(self._listing(folder), key=lambda e: e.name):
            path = folder / entry.name
            if self.ignored_name(entry.name) or not self._symlink_allowed(path):
                continue
            if entry.is_dir(follow_symlinks=self.settings.follow_symlinks):
                if self.settings.recursive or self.is_frame_folder(path, inbox):
                    yield from self.scan(path, inbox)
            elif entry.is_file(follow_symlinks=self.settings.follow_symlinks) and self.included_file(entry.name):
                yield Unit(path, inbox, "file")

    def scan_all(self) -> Iterator[Unit]:
        for inbox in self.settings.inbox:
            yield from self.scan(inbox.absolute(), inbox.absolute())
