"""What happens to an input after a run: published and marked done, retried with back-off, superseded by its
newer content, or given up on (copied into failed/ with a note saying why), and `after: keep|move|delete`.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..config import DaemonSettings
from .failed import FailedFolder, failed_name
from .intake import Intake
from .journal import Job, Journal
from .logs import logfmt_value
from .messages import JobResult, Outcome
from .metrics import DaemonMetrics
from .worker import publish_identity

log = logging.getLogger("facedeblur.daemon")


class Outcomes:
    def __init__(self, settings: DaemonSettings, journal: Journal, metrics: DaemonMetrics, failed_dir: Path,
                 on_published: Callable[[], None]):
        """`on_published()`: an output was published (the review index is out of date)."""
        self.settings = settings
        self.journal = journal
        self.metrics = metrics
        self.failed = FailedFolder(failed_dir, settings)
        self.intake: Intake | None = None   # set by the daemon once intake runs (newer versions are its business)
        self.on_published = on_published

    def reconfigure(self, settings: DaemonSettings) -> None:
        self.settings = self.failed.settings = settings

    # ---- results ------------------------------------------------------------------------------------------
    def handle_result(self, result: JobResult) -> None:
        job = self.journal.get(result.job_id)
        if job.state != "running":
            # Superseded, or settled another way, while the worker ran: a late result changes nothing.
            log.warning("event=late_result_discarded job=%d state=%s", job.id, job.state)
            return
        outcome = result.outcome
        if outcome in (Outcome.DONE, Outcome.ALREADY_PUBLISHED):
            problem = self.not_this_jobs_output(job, result.output)
            if problem is not None:
                log.error("event=result_rejected job=%d output=%s reason=%s", job.id, logfmt_value(result.output),
                          logfmt_value(problem))
                self.failed_run(job, f"a worker reported an output that is not this job's ({problem}); the job is "
                                "retried", input_fault=False)
                return
            self.done(job, result)
        elif outcome is Outcome.CHANGED:
            self.intake.supersede_changed(job, "while it was processed; nothing was published")
        elif outcome is Outcome.VANISHED:
            self.journal.mark_failed(job.id, result.error, None)
            self.metrics.jobs_failed.inc()
            self.failed.write_note(job, result.error, None, "the input had vanished")
            log.warning("event=job_failed job=%d input=%s error=%s", job.id, logfmt_value(job.rel_path),
                        logfmt_value(result.error))
            self.settle_duplicates(job, result.error)
        elif outcome is Outcome.STAGED:
            raise ValueError(f"job {job.id}: a staged result must be published by its pool before it is handled")
        else:
            self.failed_run(job, result.error, input_fault=outcome is not Outcome.TRANSIENT_FAILURE,
                            permanent=outcome is Outcome.INPUT_FAULT_PERMANENT)

    def not_this_jobs_output(self, job: Job, output: str | None) -> str | None:
        """Why `output` is not this job's published folder (directly in the outbox, with this journal's id,
        this job's id and this input's SHA-256 in its manifest), or None when it is."""
        if not output:
            return "no output folder"
        folder = Path(output)
        if folder.parent != self.settings.outbox or folder.name.startswith(".") or folder.is_symlink():
            return f"not a folder directly in {self.settings.outbox}"
        identity = publish_identity(folder)
        if identity is None or identity[:2] != (self.journal.journal_id, job.id) or \
                (job.sha256 is not None and identity[2] != job.sha256):
            return "its manifest names another journal, job or input"
        return None

    def done(self, job: Job, result: JobResult) -> None:
        frames, faces, tracks, seconds = result.frames, result.faces, result.tracks, result.seconds
        self.journal.mark_done(job.id, result.output, seconds, frames, faces, tracks)
        self.metrics.job_done(seconds, frames, faces, tracks)
        self.on_published()
        log.info("event=job_done job=%d input=%s output=%s seconds=%s frames=%s tracks=%s faces=%s%s", job.id,
                 logfmt_value(job.rel_path), logfmt_value(result.output), f"{seconds:.2f}" if seconds else "-",
                 frames, tracks,
                 faces, " already_published=true" if result.outcome is Outcome.ALREADY_PUBLISHED else "")
        self.after_done(self.journal.get(job.id))
        self.settle_duplicates(job, None)

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
                    logfmt_value(job.rel_path), job.attempts, self.settings.max_attempts, delay, input_fault,
                    logfmt_value(error))

    # ---- giving up ----------------------------------------------------------------------------------------
    def give_up(self, job: Job, error: str) -> None:
        copy = self.failed.take(job, error)
        self.journal.mark_failed(job.id, error, str(copy) if copy else None)
        self.metrics.jobs_failed.inc()
        log.error("event=job_failed job=%d input=%s attempts=%d failed_copy=%s error=%s", job.id,
                  logfmt_value(job.rel_path),
                  job.attempts, logfmt_value(copy or "-"), logfmt_value(error))
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

    # ---- after success ------------------------------------------------------------------------------------
    def after_done(self, job: Job) -> None:
        """`after: keep | move | delete` for an input whose output is published (or that was a duplicate); not
        for one that changed since it was taken (a writer that paused and went on): intake takes that again."""
        source = Path(job.path)
        if self.settings.after == "keep":
            return
        if self.intake is not None and self.intake.changed_since_taken(job):
            log.warning("event=after_action_skipped job=%d input=%s reason=%s", job.id, logfmt_value(job.rel_path),
                        logfmt_value("the input changed after it was taken; its new content is processed as a new job"))
            return
        try:
            if self.settings.after == "delete":
                shutil.rmtree(source) if source.is_dir() and not source.is_symlink() else source.unlink()
            elif self.settings.after == "move":
                target = self.settings.done_folder / job.rel_path
                if os.path.lexists(target):
                    target = target.with_name(failed_name(job))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event=after_action_failed job=%d action=%s error=%s", job.id, self.settings.after,
                        logfmt_value(exc.strerror or exc))
