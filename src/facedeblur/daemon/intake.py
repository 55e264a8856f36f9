"""Inbox -> journal: filesystem events and rescans, the stability wait, hashing, duplicates and newer versions.

One thread (the daemon's) owns this object and the journal; watchdog's observer thread only queues paths
and one hashing thread only reads inputs.
"""
from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path

from ..config import DaemonSettings
from .journal import Job, Journal
from .logs import logfmt_value
from .metrics import DaemonMetrics
from .scanning import InputRules, Unit
from .stability import InputChanged, Signature, StabilityTracker, sha256_of, signature_of
from .watcher import InboxWatcher

log = logging.getLogger("facedeblur.daemon")

NEWER_VERSION = ("the file changed after it was taken (a writer paused longer than daemon.stable_seconds, or it "
                 "was overwritten); its new content is job {job}")


def unit_of(job: Job) -> Unit:
    return Unit(Path(job.path), Path(job.inbox), job.kind)


class Intake:
    def __init__(self, settings: DaemonSettings, journal: Journal, metrics: DaemonMetrics,
                 duplicate_of_done: Callable[[Job], None]):
        """`duplicate_of_done(job)`: applies `after:` to an input whose content was already processed."""
        self.settings = settings
        self.journal = journal
        self.metrics = metrics
        self.duplicate_of_done = duplicate_of_done
        self.hashing: dict[concurrent.futures.Future, tuple[Unit, Signature]] = {}
        self.hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="facedeblur-hash")
        self.watcher: InboxWatcher | None = None
        self.start_watching()

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start_watching(self) -> None:
        self.rules = InputRules(self.settings)
        self.tracker = StabilityTracker(self.settings.stable_seconds, self.settings.follow_symlinks)
        self.watcher = InboxWatcher(self.settings.inbox, self.settings.recursive, self.settings.polling,
                                    self.settings.poll_interval)
        self.watcher.start()

    def reconfigure(self, settings: DaemonSettings) -> None:
        """A reload: a new watcher (and a rescan) only when what is watched, or how, changed."""
        old, self.settings = self.settings, settings
        if (settings.inbox, settings.recursive, settings.polling, settings.poll_interval) != \
                (old.inbox, old.recursive, old.polling, old.poll_interval):
            self.watcher.stop()
            self.start_watching()
            self.rescan()
        else:
            self.rules = InputRules(settings)
            self.tracker.stable_seconds = settings.stable_seconds
            self.tracker.follow_symlinks = settings.follow_symlinks

    def ensure_watching(self) -> None:
        if not self.watcher.alive():
            log.error("event=watcher_died reason=%s", logfmt_value("the filesystem observer stopped; restarting it"))
            self.start_watching()

    def stop(self) -> None:
        self.watcher.stop()
        self.hasher.shutdown(wait=False, cancel_futures=True)

    # ---- one tick -----------------------------------------------------------------------------------------
    def step(self) -> None:
        self.take_events()
        self.promote_stable()
        self.finish_hashing()

    def take_events(self) -> None:
        for path, is_directory in self.watcher.drain():
            unit = self.rules.unit_for(path)
            if unit is not None:
                if unit in self.tracker:
                    self.tracker.touch(unit)   # still changing: restart its clock
                else:
                    self.consider(unit)
            elif is_directory and path.is_dir():
                # A folder moved or created in the inbox: whatever it holds is new.
                inbox = self.rules.inbox_of(path)
                if inbox is not None:
                    for found in self.rules.scan(path, inbox):
                        self.consider(found)

    def rescan(self) -> None:
        for unit in self.rules.scan_all():
            self.consider(unit)

    def consider(self, unit: Unit) -> None:
        if unit in self.tracker or any(u == unit for u, _ in self.hashing.values()):
            return
        signature = self.signature(unit)
        if signature is None:
            return
        if self.journal.known(str(unit.path), signature.size, signature.mtime_ns):
            return
        self.tracker.touch(unit)

    def signature(self, unit: Unit) -> Signature | None:
        return signature_of(unit, self.settings.follow_symlinks)

    def promote_stable(self) -> None:
        stable, vanished = self.tracker.poll()
        for unit in vanished:
            log.info("event=input_vanished input=%s reason=%s", logfmt_value(unit.rel_path),
                     logfmt_value("removed before it was stable"))
        for unit, signature in stable:
            if self.journal.known(str(unit.path), signature.size, signature.mtime_ns):
                continue
            future = self.hasher.submit(sha256_of, unit, signature, self.settings.follow_symlinks)
            self.hashing[future] = (unit, signature)

    def finish_hashing(self) -> None:
        for future in [f for f in self.hashing if f.done()]:
            unit, signature = self.hashing.pop(future)
            try:
                sha = future.result()
            except FileNotFoundError:
                log.info("event=input_vanished input=%s reason=%s", logfmt_value(unit.rel_path),
                         logfmt_value("removed while hashing"))
                continue
            except InputChanged:
                self.tracker.touch(unit)   # swapped or replaced (e.g. by a symlink) since it was checked
                continue
            except OSError as exc:
                sha = None   # unreadable: queued anyway, so the failure is recorded and retried
                log.warning("event=input_unreadable input=%s error=%s", logfmt_value(unit.rel_path),
                            logfmt_value(exc.strerror or exc))
            if self.signature(unit) != signature:
                self.tracker.touch(unit)   # changed while we read it: wait for it to settle again
                continue
            self.add(unit, signature, sha)

    def add(self, unit: Unit, signature: Signature, sha: str | None) -> None:
        fields = dict(path=str(unit.path), inbox=str(unit.inbox), rel_path=unit.rel_path, kind=unit.kind,
                      size=signature.size, mtime_ns=signature.mtime_ns, sha256=sha)
        older = self.journal.queued_at(str(unit.path))
        earlier = self.journal.done_with_hash(sha) if (sha and self.settings.skip_duplicates) else None
        if earlier is not None:
            job_id = self.journal.add(**fields, state="duplicate", duplicate_of=earlier.id,
                                      error=f"same content as job {earlier.id} ({earlier.rel_path})")
            self.metrics.duplicates.inc()
            log.info("event=duplicate job=%d input=%s same_as=%d", job_id, logfmt_value(unit.rel_path), earlier.id)
            if earlier.state == "done":
                self.duplicate_of_done(self.journal.get(job_id))
            # else: it shares the fate of the earlier job, settled when that one is (Outcomes.settle_duplicates)
        else:
            job_id = self.journal.add(**fields)
            log.info("event=queued job=%d input=%s kind=%s bytes=%d", job_id, logfmt_value(unit.rel_path), unit.kind,
                     signature.size)
        for job in older:   # an earlier, unfinished version of the same file: only the newest content counts
            self.journal.supersede(job.id, NEWER_VERSION.format(job=job_id), by=job_id)
            log.info("event=job_superseded job=%d input=%s by=%d", job.id, logfmt_value(job.rel_path), job_id)

    def changed_since_taken(self, job: Job) -> bool:
        """True when the input at the job's path is no longer what was taken (size or mtime differ). A vanished
        input is not 'changed': its job fails as vanished."""
        signature = self.signature(unit_of(job))
        return signature is not None and (signature.size, signature.mtime_ns) != (job.size, job.mtime_ns)

    def unchanged_since_taken(self, job: Job) -> bool:
        """True when the input is still there, exactly as it was taken (size and mtime)."""
        signature = self.signature(unit_of(job))
        return signature is not None and (signature.size, signature.mtime_ns) == (job.size, job.mtime_ns)

    def supersede_changed(self, job: Job, when: str) -> None:
        """The job's input changed: the job ends as superseded and the new content is watched until stable,
        then queued as a newer job."""
        self.journal.supersede(job.id, NEWER_VERSION.format(job="queued once it is stable") + f" ({when})")
        log.info("event=job_superseded job=%d input=%s reason=%s", job.id, logfmt_value(job.rel_path),
                 logfmt_value(f"the input changed {when}"))
        self.tracker.touch(unit_of(job))
