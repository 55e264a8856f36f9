"""The failed/ folder: a copy of each input given up on, beside a note saying why.

Failed inputs are always copied, never moved: a file that failed may be half of a clip whose writer only
paused (an NVR pausing longer than daemon.stable_seconds), and a move would pull it from under that writer
(the rest of the clip then lands in failed/, or, across filesystems, in an unlinked inode and is lost). With
`after: move|delete` the original is removed later, by `remove_quiet_originals`, once it has not changed for
PAUSED_WRITER_GRACE; if it changes first, its new content is taken as a new job by intake.

A copy above daemon.failed_copy_max_mb is not made (the note keeps the input's SHA-256, the input stays where
it is), and holes in a sparse file stay holes in its copy.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from pathlib import Path

from ..config import DaemonSettings
from ..image_files import write_bytes_atomic
from ..safe_text import display_name, encodable
from .journal import Job
from .logs import logfmt_value
from .worker import output_name

log = logging.getLogger("facedeblur.daemon")

# A failed original in the inbox is removed (after: move|delete) only once unchanged this long past its last write.
PAUSED_WRITER_GRACE_MIN = 300.0
PAUSED_WRITER_GRACE_FACTOR = 10   # x daemon.stable_seconds, when that is longer


class CopyRefused(Exception):
    """The input is not copied into failed/; the message says why, for the note."""


def paused_writer_grace(settings: DaemonSettings) -> float:
    return max(PAUSED_WRITER_GRACE_MIN, PAUSED_WRITER_GRACE_FACTOR * settings.stable_seconds)


def failed_name(job: Job) -> str:
    suffix = Path(job.path).suffix if job.kind == "file" else ""
    return output_name(job.rel_path, job.id) + suffix


class FailedFolder:
    def __init__(self, folder: Path, settings: DaemonSettings):
        self.folder = folder
        self.settings = settings
        self.originals: dict[int, Job] = {}   # failed inputs to remove from the inbox once quiet (after: move|delete)

    def take(self, job: Job, error: str) -> Path | None:
        """Copy the input in and write its note; the copy, or None."""
        try:
            copy, why_not = self.copy_in(job), None
        except CopyRefused as exc:
            copy, why_not = None, str(exc)
        self.write_note(job, error, copy, why_not)
        if copy is not None and self.settings.after != "keep":
            self.originals[job.id] = job
        return copy

    def copy_in(self, job: Job) -> Path | None:
        source = Path(job.path)
        target = self.folder / failed_name(job)
        temp = self.folder / f".{target.name}.part"
        follow = self.settings.follow_symlinks
        limit = int(self.settings.failed_copy_max_mb * 1024 * 1024)
        try:
            if not os.path.lexists(source):
                return None
            if source.is_symlink() and not follow:
                return None   # never copy through a link: it can point anywhere on the machine
            if source.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
                if job.size > limit:
                    raise CopyRefused(_above_cap(job.size, limit))
                # Links inside a frame folder are left out, neither followed nor copied as links.
                shutil.copytree(source, temp, symlinks=True,
                                copy_function=lambda s, d: copy_file_nofollow(Path(s), Path(d), follow, limit),
                                ignore=None if follow else
                                lambda folder, names: [n for n in names if os.path.islink(os.path.join(folder, n))])
            else:
                copy_file_nofollow(source, temp, follow, limit)
            os.replace(temp, target)
            return target
        except (OSError, CopyRefused) as exc:
            shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
            if isinstance(exc, CopyRefused):
                log.warning("event=failed_copy_skipped job=%d input=%s reason=%s", job.id,
                            logfmt_value(job.rel_path), logfmt_value(exc))
                raise
            log.warning("event=failed_copy_error job=%d input=%s error=%s", job.id, logfmt_value(job.rel_path),
                        logfmt_value(exc.strerror or exc))
            return None

    def write_note(self, job: Job, error: str, copy: Path | None, why_not: str | None = None) -> None:
        copy_line = display_name(copy) if copy else f"none ({why_not or 'the input could not be copied'})"
        note = (f"input: {display_name(job.path)}\nrelative to inbox: {display_name(job.rel_path)}\n"
                f"sha256: {job.sha256 or 'unknown'}\nbytes: {job.size}\njob: {job.id}\nattempts: {job.attempts}\n"
                f"copy: {copy_line}\ntime: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\nerror: {encodable(error)}\n")
        try:
            write_bytes_atomic(self.folder / (failed_name(job) + ".error.txt"), note.encode("utf-8"))
        except OSError as exc:
            log.warning("event=error_note_failed job=%d error=%s", job.id, logfmt_value(exc.strerror or exc))

    def remove_quiet_originals(self, unchanged) -> None:
        """`after: move|delete`: remove failed originals (copied into failed/) that stayed unchanged since they
        were taken (`unchanged(job)`) for PAUSED_WRITER_GRACE past their last write; forget those that
        changed (intake takes their new content) or vanished."""
        grace = paused_writer_grace(self.settings)
        for job_id, job in list(self.originals.items()):
            if not unchanged(job):
                del self.originals[job_id]
                continue
            if time.time() - job.mtime_ns / 1e9 < grace:
                continue
            del self.originals[job_id]
            source = Path(job.path)
            try:
                shutil.rmtree(source) if source.is_dir() and not source.is_symlink() else source.unlink()
                log.info("event=failed_original_removed job=%d input=%s copy=%s", job.id, logfmt_value(job.rel_path),
                         logfmt_value(self.folder / failed_name(job)))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("event=after_action_failed job=%d action=%s error=%s", job.id, self.settings.after,
                            logfmt_value(exc.strerror or exc))


def _above_cap(size: int, limit: int) -> str:
    return (f"{size / 2**20:.1f} MB is above daemon.failed_copy_max_mb ({limit / 2**20:g} MB); the input stays "
            "where it is, its SHA-256 is above")


def copy_file_nofollow(source: Path, target: Path, follow_symlinks: bool, limit: int | None = None) -> None:
    """Copy a regular file, holes as holes; with `follow_symlinks` false the source is opened with O_NOFOLLOW (a
    file swapped for a link a moment ago is not copied) and must be a regular file. Above `limit` bytes:
    CopyRefused."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as reader:
        st = os.fstat(reader.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        if limit is not None and st.st_size > limit:
            raise CopyRefused(_above_cap(st.st_size, limit))
        with open(target, "wb") as writer:   # mode from the umask, like every file the daemon writes
            _copy_sparse(reader.fileno(), writer.fileno(), st.st_size)
            os.fsync(writer.fileno())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_sparse(source: int, target: int, size: int) -> None:
    """Copy only the data regions (SEEK_DATA/SEEK_HOLE), then set the length: holes stay holes. Written here
    because shutil's copies (copyfileobj, copyfile's sendfile) write every hole out as zeros. Bytes beyond
    `size` (the file grew meanwhile) are not copied."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
            end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:   # only a hole is left
                break
            if exc.errno != errno.EINVAL:
                raise
            start, end = offset, size      # a filesystem without SEEK_DATA: everything is data
        if start >= size:
            break
        _copy_range(source, target, start, end)
        offset = end
    os.ftruncate(target, size)


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    os.lseek(source, start, os.SEEK_SET)
    os.lseek(target, start, os.SEEK_SET)
    while start < end:
        chunk = os.read(source, min(end - start, 1 << 20))
        if not chunk:
            return   # shrank meanwhile
        start += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]
