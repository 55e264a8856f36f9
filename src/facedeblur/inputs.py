"""Supported inputs, in one place: which files are videos or images, what a frame folder holds, and the
content hash of an input.

`facedeblur process` (footage/decode.open_source), `restore`, the daemon's default `include` patterns and
its frame-folder rule, the journal's sha256 and the manifest's `input.sha256` all come from here, so they
cannot disagree.

Videos are whatever FFmpeg (inside PyAV) demuxes from what cameras, phones and NVRs export: MP4/MOV/MKV/
WebM/AVI/GIF, MPEG-TS (`.ts`, `.m2ts`, `.mts`), MPEG-PS (`.mpg`, `.mpeg`, `.vob`), 3GP, raw H.264/H.265
elementary streams (`.264`, `.h264`, `.265`, `.h265`, `.hevc`) and Dahua `.dav` (FFmpeg's `dhav` demuxer).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".3gp",
                    ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".vob",
                    ".264", ".h264", ".265", ".h265", ".hevc", ".dav")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Where a person reads the list above: errors point here instead of enumerating twenty extensions each time.
SUPPORTED_INPUTS_DOC = 'docs/footage-pipeline.md, "Supported inputs"'
CHUNK = 1 << 20


def default_include() -> list[str]:
    """The daemon's default `include` patterns: every supported video and image extension."""
    return [f"*{ext}" for ext in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS]


def is_video_name(name: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS


def is_image_name(name: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def is_frame_name(name: str) -> bool:
    """A file a frame folder's frames are made of: an image, not hidden (`.DS_Store`, `._x.png`)."""
    return is_image_name(name) and not name.startswith(".")


def input_kind(path: Path) -> str | None:
    """'frames' (a folder), 'image', 'video' by extension, or None when facedeblur does not take it."""
    path = Path(path)
    if path.is_dir():
        return "frames"
    if is_image_name(path.name):
        return "image"
    if is_video_name(path.name):
        return "video"
    return None


def natural_key(name: str) -> list:
    """Order 'frame2' before 'frame10' (names with timestamps or counters without zero padding)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's frames in processing order (natural name order). Raises OSError if unreadable."""
    files = [p for p in Path(folder).iterdir() if is_frame_name(p.name) and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


class InputChanged(OSError):
    """The file opened for hashing is not the one whose signature was taken (swapped, replaced, a link)."""


def sha256_of_file(path: Path, expected: tuple[int, int] | None = None, follow_symlinks: bool = True) -> str:
    """sha256 of a file. Without `follow_symlinks` a final symlink is refused (ELOOP); with `expected`
    (size, mtime_ns) the opened file must be the regular file that was checked, so a swap between the check
    and the read is seen (InputChanged)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or (expected is not None and (st.st_size, st.st_mtime_ns) != expected):
            raise InputChanged(f"{path} changed or was replaced before it was read")
        return sha256_of_stream(handle)


def sha256_of_stream(handle) -> str:
    """sha256 of what is left to read in an open binary file, read in chunks (files can be many GB)."""
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of_frames(files: list[Path], expected: dict[str, tuple[int, int]] | None = None,
                     follow_symlinks: bool = True) -> str:
    """A frame folder's hash: sha256 of the lines '<name> <sha256 of the file>\\n', in processing order."""
    digest = hashlib.sha256()
    for path in files:
        file_hash = sha256_of_file(path, expected.get(path.name) if expected is not None else None, follow_symlinks)
        digest.update(f"{path.name} {file_hash}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def sha256_of_input(path: Path, follow_symlinks: bool = True) -> str:
    """The content hash of an input (file, or frame folder over `frame_files`): manifest and journal alike."""
    path = Path(path)
    if path.is_dir():
        return sha256_of_frames(frame_files(path), follow_symlinks=follow_symlinks)
    return sha256_of_file(path, follow_symlinks=follow_symlinks)
