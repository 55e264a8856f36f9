"""What happens to an input after a run: published and marked done, retried with back-off, superseded by its
newer content, or given up on (copied into failed/ with a note saying why), and `after: keep|move|delete`.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import DaemonSettings
from ..image_files import write_bytes_atomic
from ..safe_text import display_name, encodable
from .intake import Intake
from .journal import Job, Journal
from .logs import q
from .metrics import DaemonMetrics
from .worker import output_name

log = logging.getLogger("facedeblur.daemon")


class Outcomes:
    def __init__(self, settings: DaemonSettings, journal: Journal, metrics: DaemonMetrics, failed_dir: Path,
                 on_published: Callable[[], None]):
        """`on_published()`: an output was published (the review index is out of date)."""
        self.settings = settings
        self.journal = journal
        self.metrics = metrics
        self.failed_dir = failed_dir
        self.intake: Intake | None = None   # set by the daemon once intake runs (newer versions are its business)
        self.on_published = on_published

    # ---- results ------------------------------------------------------------------------------------------
    def handle_result(self, result: dict[str, Any]) -> None:
        job = self.journal.get(result["job_id"])
        if job.state != "running":
            # Superseded, or settled another way, while the worker ran: a late result changes nothing.
            log.warning("event=late_result_discarded job=%d state=%s", job.id, job.state)
            return
        if result["ok"]:
            frames, faces, tracks, seconds = (result.get("frames"), result.get("faces"), result.get("tracks"),
                                              result.get("seconds"))
            self.journal.mark_done(job.id, result["output"], seconds, frames, faces, tracks)
            self.metrics.job_done(seconds, frames, faces, tracks)
            self.on_published()
            log.info("event=job_done job=%d input=%s output=%s seconds=%s frames=%s tracks=%s faces=%s%s", job.id,
                     q(job.rel_path), q(result["output"]), f"{seconds:.2f}" if seconds else "-", frames, tracks,
                     faces, " already_published=true" if result.get("already_published") else "")
            self.after_done(self.journal.get(job.id))
            self.settle_duplicates(job, None)
        elif result.get("changed"):
            self.intake.supersede_changed(job, "while it was processed; nothing was published")
        elif result.get("vanished"):
            self.journal.mark_failed(job.id, result["error"], None)
            self.metrics.jobs_failed.inc()
            self.write_error_note(job, result["error"], None)
            log.warning("event=job_failed job=%d input=%s error=%s", job.id, q(job.rel_path), q(result["error"]))
            self.settle_duplicates(job, result["error"])
        else:
            self.failed_run(job, result["error"], input_fault=result.get("input_fault", True),
                            permanent=result.get("permanent", False))

    def failed_run(self, job: Job, error: str, input_fault: bool, permanent: bool = False) -> None:
        """`permanent`: the input can never succeed (not a video, empty, a symlink): failed at once, no retry."""
        job = self.journal.get(job.id)
        if input_fault and self.intake is not None and self.intake.changed_since_taken(job):
            # A half-written file that failed: its complete version is what counts, not this failure.
            self.intake.supersede_changed(job, f"after it was taken; this run failed: {error}")
            return
        if input_fault and (permanent or job.attempts >= self.settings.max_attempts):
            self.give_up(job, error)
            return
        attempts = max(job.attempts, 1)
        # The input's failures back off; the machine's (disk full) retry at a steady pace, at least 1 s apart.
        delay = self.settings.retry_seconds * 2 ** (attempts - 1) if input_fault else max(self.settings.retry_seconds, 1.0)
        self.journal.mark_retry(job.id, error, min(delay, 3600), count_attempt=input_fault)
        self.metrics.jobs_retried.inc()
        log.warning("event=job_retry job=%d input=%s attempt=%d of=%d retry_in=%.0fs counted=%s error=%s", job.id,
                    q(job.rel_path), job.attempts, self.settings.max_attempts, delay, input_fault, q(error))

    # ---- giving up ----------------------------------------------------------------------------------------
    def give_up(self, job: Job, error: str) -> None:
        copy = self.copy_to_failed(job)
        self.write_error_note(job, error, copy)
        self.journal.mark_failed(job.id, error, str(copy) if copy else None)
        self.metrics.jobs_failed.inc()
        log.error("event=job_failed job=%d input=%s attempts=%d failed_copy=%s error=%s", job.id, q(job.rel_path),
                  job.attempts, q(copy or "-"), q(error))
        self.settle_duplicates(job, error)

    def settle_duplicates(self, job: Job, error: str | None) -> None:
        """Inputs recognised as copies of `job` while it was still queued share its outcome: when it is done
        they are done with it (and `after:` applies to them); when it fails they fail with it, each in
        failed/ with the reason, since the same bytes cannot succeed either."""
        for duplicate in self.journal.duplicates_of(job.id):
            if error is None:
                self.after_done(duplicate)
            else:
                self.give_up(duplicate, f"same content as {job.rel_path} (job {job.id}), which failed: {error}")

    def failed_name(self, job: Job) -> str:
        suffix = Path(job.path).suffix if job.kind == "file" else ""
        return output_name(job.rel_path, job.id) + suffix

    def copy_to_failed(self, job: Job) -> Path | None:
        """The input goes to failed/ (copied when `after: keep`, since inputs are never removed then)."""
        source = Path(job.path)
        target = self.failed_dir / self.failed_name(job)
        temp = self.failed_dir / f".{target.name}.part"
        try:
            if not os.path.lexists(source):
                return None
            if source.is_symlink() and not self.settings.follow_symlinks:
                return None   # never copy through a link: it can point anywhere on the machine
            if self.settings.after == "keep":
                if source.is_dir():
                    shutil.rmtree(temp, ignore_errors=True)
                    # Links inside a frame folder are left out, neither followed nor copied as links.
                    follow = self.settings.follow_symlinks
                    shutil.copytree(source, temp, symlinks=True,
                                    copy_function=lambda s, d: copy_file_nofollow(Path(s), Path(d), follow),
                                    ignore=None if follow else
                                    lambda folder, names: [n for n in names if os.path.islink(os.path.join(folder, n))])
                else:
                    copy_file_nofollow(source, temp, self.settings.follow_symlinks)
                os.replace(temp, target)
            else:
                shutil.move(str(source), str(target))
            return target
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
            log.warning("event=failed_copy_error job=%d input=%s error=%s", job.id, q(job.rel_path),
                        q(exc.strerror or exc))
            return None

    def write_error_note(self, job: Job, error: str, copy: Path | None) -> None:
        note = (f"input: {display_name(job.path)}\nrelative to inbox: {display_name(job.rel_path)}\n"
                f"sha256: {job.sha256 or 'unknown'}\njob: {job.id}\nattempts: {job.attempts}\n"
                f"copy: {display_name(copy) if copy else 'none (input could not be copied)'}\n"
                f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\nerror: {encodable(error)}\n")
        try:
            write_bytes_atomic(self.failed_dir / (self.failed_name(job) + ".error.txt"), note.encode("utf-8"))
        except OSError as exc:
            log.warning("event=error_note_failed job=%d error=%s", job.id, q(exc.strerror or exc))

    # ---- after success ------------------------------------------------------------------------------------
    def after_done(self, job: Job) -> None:
        """`after: keep | move | delete` for an input whose output is published (or that was a duplicate)."""
        source = Path(job.path)
        try:
            if self.settings.after == "delete":
                shutil.rmtree(source) if source.is_dir() and not source.is_symlink() else source.unlink()
            elif self.settings.after == "move":
                target = self.settings.done_folder / job.rel_path
                if os.path.lexists(target):
                    target = target.with_name(self.failed_name(job))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event=after_action_failed job=%d action=%s error=%s", job.id, self.settings.after,
                        q(exc.strerror or exc))


def copy_file_nofollow(source: Path, target: Path, follow_symlinks: bool) -> None:
    """Copy a regular file; with `follow_symlinks` false the source is opened with O_NOFOLLOW (a file
    swapped for a link a moment ago is not copied) and must be a regular file."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as reader:
        st = os.fstat(reader.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        with open(target, "wb") as writer:   # mode from the umask, like every file the daemon writes
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
