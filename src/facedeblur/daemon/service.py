"""The daemon's main loop: intake (intake.py) -> dispatch to the worker pool (local_workers.py) -> outcomes
(outcomes.py), plus signals (SIGTERM stop, SIGHUP reload), systemd notifications (READY, WATCHDOG, STATUS,
STOPPING), the review index and retention.

One thread owns the journal and all decisions; watchdog's observer thread only queues paths and one
hashing thread only reads inputs. Every state change is committed to the journal before the next
step acts on it, which is what lets a restart after `kill -9` pick up exactly where the daemon was.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sdnotify

from ..config import Config, DaemonSettings, load_config
from ..errors import FacedeblurError, NotYetAvailableError
from ..pipeline.restore import resolve_model
from .intake import Intake
from .journal import Journal, JournalUnwritable, damaged_message, is_damaged
from .logs import logfmt_value
from .messages import JobProgress, JobTicket
from .metrics import DaemonMetrics
from .outcomes import Outcomes
from .pool import PoolCallbacks, WorkerPool, make_worker_pool
from .progress import HEARTBEAT_SECONDS, remove_heartbeat, write_heartbeat
from .retention import apply_retention
from .retry_requests import take_requests
from ..search.sync import refresh_face_index
from .review_index import write_review_index
from .worker import outbox_write_problem, output_name

log = logging.getLogger("facedeblur.daemon")

TICK_SECONDS = 0.2
RETRY_REQUEST_SECONDS = 1.0   # how often the state folder is looked at for reviewers' retry requests
INDEX_MIN_INTERVAL = 2.0   # seconds between rebuilds of OUTBOX/index.html while jobs finish quickly
MAX_INTERRUPTIONS = 10   # a clip that takes the whole daemon down this often is given up on


@dataclass(frozen=True)
class FolderOverrides:
    inbox: list[Path] | None = None
    outbox: Path | None = None
    state: Path | None = None


def resolve_config(config_path: Path | None, overrides: FolderOverrides) -> Config:
    """The config file (or defaults) with the command-line folders applied, folders checked."""
    config = load_config(config_path)
    daemon = config.daemon
    updates: dict[str, Any] = {}
    if overrides.inbox:
        updates["inbox"] = overrides.inbox
    if overrides.outbox:
        updates["outbox"] = overrides.outbox
    if overrides.state:
        updates["state"] = overrides.state
    daemon = daemon.model_copy(update=updates)
    where = f" in {config_path}" if config_path else ""
    if not daemon.inbox:
        raise FacedeblurError(f"no inbox folder: pass --inbox DIR or set daemon.inbox{where}")
    if daemon.outbox is None:
        raise FacedeblurError(f"no outbox folder: pass --outbox DIR or set daemon.outbox{where}")
    if daemon.state is None:
        raise FacedeblurError(f"no state folder: pass --state DIR or set daemon.state{where}")
    for inbox in daemon.inbox:
        if not inbox.is_dir():
            # Often a share that is not mounted yet: exit 75, which systemd restarts (every RestartSec).
            raise NotYetAvailableError(f"inbox {inbox} does not exist or is not a folder; create it or fix "
                                       f"daemon.inbox{where} (exit status 75: systemd starts the daemon again "
                                       "until it appears)")
    for name, folder in (("outbox", daemon.outbox), ("state", daemon.state)):
        if not folder.parent.is_dir():
            raise FacedeblurError(f"{name} folder {folder}: its parent {folder.parent} does not exist; "
                                  f"create it or fix daemon.{name}{where}")
    # The daemon's own folders inside an inbox would be picked up as input: a failed input re-ingested from
    # failed/ again and again, `after: move` nesting done/done/... without end.
    inboxes = [i.absolute() for i in daemon.inbox]
    for name, folder in (("outbox", daemon.outbox), ("state", daemon.state), ("done_folder", daemon.done_folder),
                         ("failed_folder", daemon.failed_folder)):
        if folder is None:
            continue
        folder = folder.absolute()
        if any(folder == i or i in folder.parents for i in inboxes):
            raise FacedeblurError(f"daemon.{name} {folder} is inside an inbox (the daemon would take its own files "
                                  f"as input); set it{where} to a folder outside every inbox")
    absolute = {k: (v.absolute() if isinstance(v, Path) else v) for k, v in
                (("outbox", daemon.outbox), ("state", daemon.state), ("done_folder", daemon.done_folder),
                 ("failed_folder", daemon.failed_folder))}
    absolute["inbox"] = inboxes
    return config.model_copy(update={"daemon": daemon.model_copy(update=absolute)})


class Daemon:
    """The loop that ties intake, the worker pool and outcomes together, plus signals, systemd and the index."""

    def __init__(self, config: Config, config_path: Path | None, overrides: FolderOverrides):
        self.config = config
        self.config_path = config_path
        self.overrides = overrides
        self.settings: DaemonSettings = config.daemon
        self.outbox: Path = self.settings.outbox
        self.state_dir: Path = self.settings.state
        self.failed_dir: Path = self.settings.failed_folder or self.outbox / "failed"
        self.notifier = sdnotify.SystemdNotifier()
        self.metrics = DaemonMetrics()
        self.stop_requested = False
        self.reload_requested = False
        self.journal_paused = False
        self.index_dirty = True
        self.index_written = 0.0
        self.intake: Intake | None = None
        self.pool: WorkerPool | None = None
        self.started_at = time.time()
        self.heartbeat_at = 0.0
        self.holds_lock = False   # only the daemon holding STATE/daemon.lock may touch its heartbeat file

    # ---- start-up -----------------------------------------------------------------------------------------
    def _prepare_folders(self) -> None:
        for folder in (self.outbox, self.state_dir, self.failed_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FacedeblurError(f"cannot create {folder} ({exc.strerror}); create it or fix the config") from None
        self._lock_file = open(self.state_dir / "daemon.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FacedeblurError(f"another facedeblur daemon is already using {self.state_dir}; stop it first "
                                  "or give this one its own --state") from None
        self.holds_lock = True

    def _recover(self) -> None:
        """Jobs left running by the last run: the pool re-queues them (local workers died with the daemon) or
        adopts them (remote workers may still be on them); staging leftovers no attempt can still use go."""
        requeued = self.pool.recover(self.journal)
        self.pool.sweep_staging()
        for job in requeued:
            log.info("event=job_requeued job=%d input=%s reason=%s", job.id, logfmt_value(job.rel_path),
                     logfmt_value("it was running when the daemon stopped"))
            if job.interruptions + 1 >= MAX_INTERRUPTIONS:
                self.outcomes.give_up(self.journal.get(job.id), f"the daemon stopped {MAX_INTERRUPTIONS} times while "
                                      "processing this input (crash, power loss or out of memory); check it by hand")

    def run(self) -> int:
        try:
            return self._run_reporting_journal_errors()
        finally:
            if self.holds_lock:
                remove_heartbeat(self.state_dir)   # stopped, whichever way: status must not call it alive

    def _run_reporting_journal_errors(self) -> int:
        try:
            return self._run()
        except sqlite3.DatabaseError as exc:
            if is_damaged(exc):
                raise FacedeblurError(damaged_message(self.state_dir / "journal.sqlite3", exc)) from None
            raise
        except JournalUnwritable as exc:
            # At start-up (re-queueing interrupted jobs): exit 1, so systemd starts it again a little later.
            log.error("event=journal_unwritable error=%s action=%s", logfmt_value(exc),
                      logfmt_value("stopped; free space in the state folder, systemd restarts the daemon"))
            return 1

    def _run(self) -> int:
        self._prepare_folders()
        self._beat()
        self.journal = Journal(self.state_dir)
        self.outcomes = Outcomes(self.settings, self.journal, self.metrics, self.failed_dir,
                                 on_published=self._index_out_of_date)
        callbacks = PoolCallbacks(on_result=self._job_result, on_lost=self._job_lost,
                                  on_first_ready=self._first_ready, keep_alive=self._keep_alive,
                                  on_progress=self._job_progress)
        self.pool = make_worker_pool(self.config, self.outbox, self.journal, self.metrics, callbacks)
        self._recover()
        if self.settings.metrics_port:
            try:
                self.metrics.serve(self.settings.metrics_port, self.settings.metrics_address)
            except OSError as exc:
                raise FacedeblurError(f"metrics port {self.settings.metrics_port} cannot be opened ({exc.strerror}); "
                                      "choose another daemon.metrics_port") from None
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.pool.fill()
        self.intake = Intake(self.settings, self.journal, self.metrics, self.outcomes.after_done)
        self.outcomes.intake = self.intake
        log.info("event=started inbox=%s outbox=%s state=%s workers=%d polling=%s journal=%s",
                 logfmt_value(",".join(map(str, self.settings.inbox))), logfmt_value(self.outbox),
                 logfmt_value(self.state_dir), self.settings.workers,
                 self.settings.polling, self.journal.journal_id)
        self.intake.rescan()
        try:
            return self._loop()
        finally:
            self._shutdown()

    # ---- liveness and progress ----------------------------------------------------------------------------
    def _beat(self, state: str = "running") -> None:
        """STATE/daemon.heartbeat, so `facedeblur status` can tell a live daemon from a stopped or killed one."""
        self.heartbeat_at = time.monotonic()
        try:
            write_heartbeat(self.state_dir, self.started_at, state)
        except OSError as exc:
            log.warning("event=heartbeat_failed error=%s", logfmt_value(exc.strerror or exc))

    def _beat_if_due(self) -> None:
        if time.monotonic() - self.heartbeat_at >= HEARTBEAT_SECONDS:
            self._beat("stopping" if self.stop_requested else "running")

    def _keep_alive(self) -> None:
        self.notifier.notify("WATCHDOG=1")
        self._beat_if_due()

    def _job_progress(self, progress: JobProgress) -> None:
        if self.journal.record_progress(progress.job_id, progress.attempt, progress.stage, progress.frames_done,
                                        progress.frames_total):
            self.metrics.show_progress(self.journal.running())

    def _job_result(self, result) -> None:
        self.outcomes.handle_result(result)
        self.metrics.show_progress(self.journal.running())

    def _index_out_of_date(self) -> None:
        self.index_dirty = True

    def _first_ready(self) -> None:
        self.notifier.notify("READY=1")
        log.info("event=ready")

    # ---- the loop -----------------------------------------------------------------------------------------
    def _loop(self) -> int:
        next_rescan = time.monotonic() + self.settings.rescan_seconds
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        ping_every = watchdog_usec / 2e6 if watchdog_usec else 10.0
        next_ping = 0.0
        next_retry_check = 0.0
        while not self.stop_requested:
            self._beat_if_due()
            if self.journal_paused:
                # The journal cannot be written (state disk full): take nothing in, start nothing, leave the
                # workers' results in their pipes, keep the watchdog fed; probe every second.
                if time.monotonic() >= next_ping:
                    self.notifier.notify("WATCHDOG=1\nSTATUS=paused: the job journal cannot be written")
                    next_ping = time.monotonic() + ping_every
                time.sleep(1.0)
                self._try_resume()
                continue
            try:
                self.pool.respawn_if_due()
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                self.intake.take_events()
                if time.monotonic() >= next_rescan:
                    self.intake.rescan()
                    self._housekeeping()
                    next_rescan = time.monotonic() + self.settings.rescan_seconds
                self.intake.promote_stable()
                self.intake.finish_hashing()
                if time.monotonic() >= next_retry_check:
                    take_requests(self.journal, self.state_dir)
                    next_retry_check = time.monotonic() + RETRY_REQUEST_SECONDS
                self._dispatch()
                self.pool.check_timeouts(self.settings.job_timeout)
                if self.index_dirty and time.monotonic() - self.index_written >= INDEX_MIN_INTERVAL:
                    self._write_index()
                if time.monotonic() >= next_ping:
                    self.intake.ensure_watching()
                    self._notify_status()
                    next_ping = time.monotonic() + ping_every
                self.pool.collect(timeout=TICK_SECONDS)
            except JournalUnwritable as exc:
                self.journal_paused = True
                log.error("event=journal_unwritable error=%s action=%s", logfmt_value(exc),
                          logfmt_value("intake and new jobs paused until the state folder takes writes again"))
        return 0

    def _try_resume(self) -> None:
        if not self.journal.writable():
            return
        try:
            orphans = self.journal.requeue_orphans(self.pool.held_jobs())
        except JournalUnwritable:
            return
        self.journal_paused = False
        log.info("event=journal_writable action=%s requeued=%s", logfmt_value("intake and jobs resumed"),
                 ",".join(map(str, orphans)) or "-")

    def _notify_status(self) -> None:
        counts = self.journal.counts()
        self.metrics.queue_depth.set(counts["queued"])
        self.metrics.running.set(counts["running"])
        self.metrics.show_progress(self.journal.running())   # also drops the series of jobs lost meanwhile
        # Say so when no worker can take jobs (models failed to load): the queue is stalled, not healthy.
        stalled = "no worker has its models loaded (see event=model_load_failed); " if self.pool.stalled() else ""
        self.notifier.notify(f"WATCHDOG=1\nSTATUS={stalled}queued {counts['queued']}, running {counts['running']}, "
                             f"done {counts['done']}, failed {counts['failed']}")

    # ---- dispatch -----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        idle = self.pool.idle()
        if not idle:
            return
        for job in self.journal.next_queued(len(idle), exclude=self.pool.held_jobs()):
            if self.intake.changed_since_taken(job):
                # Re-checked as the job starts: a writer that paused longer than stable_seconds went on writing.
                self.intake.supersede_changed(job, "before it started")
                continue
            worker = idle.pop(0)
            attempt = self.journal.mark_running(job.id, worker.pid)
            self.pool.start_job(worker, JobTicket.for_job(
                job, attempt, outbox=str(self.outbox), name=output_name(job.rel_path, job.id),
                journal_id=self.journal.journal_id, follow_symlinks=self.settings.follow_symlinks))
            log.info("event=job_started job=%d input=%s attempt=%d worker=%d", job.id, logfmt_value(job.rel_path),
                     job.attempts + 1, worker.index)

    def _job_lost(self, job_id: int, error: str, worker_died: bool, input_fault: bool) -> None:
        """A job whose worker died (or was stopped at the job timeout) without a result; `input_fault` false: the
        job never reached a worker (a remote task the broker lost), so no attempt is counted."""
        if worker_died:
            # FFmpeg's encoders can crash outright on a full disk: then the machine, not the input, is at fault.
            cause = outbox_write_problem(self.outbox)
            if cause is not None:
                error += f" [{cause}; the job is retried once {self.outbox} is writable]"
                input_fault = False
        self.outcomes.failed_run(self.journal.get(job_id), error, input_fault=input_fault)

    # ---- index and housekeeping ---------------------------------------------------------------------------
    def _write_index(self) -> None:
        self.index_dirty, self.index_written = False, time.monotonic()
        try:
            write_review_index(self.journal, self.outbox)
        except OSError as exc:
            log.warning("event=index_failed error=%s", logfmt_value(exc.strerror or exc))
        try:   # the person-search index: new jobs' track identities in, deleted jobs out
            refresh_face_index(self.outbox, self.state_dir)
        except (OSError, sqlite3.Error, FacedeblurError) as exc:
            log.warning("event=face_index_failed error=%s", logfmt_value(exc))

    def _housekeeping(self) -> None:
        self.pool.sweep_staging()
        self.outcomes.failed.remove_quiet_originals(self.intake.unchanged_since_taken)
        try:
            if apply_retention(self.journal, self.outbox, self.settings.retention_days,
                               self.settings.retention_max_gb):
                self.index_dirty = True
        except OSError as exc:
            log.warning("event=retention_failed error=%s", logfmt_value(exc.strerror or exc))

    # ---- signals, reload, shutdown ------------------------------------------------------------------------
    def _on_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _on_reload(self, signum, frame) -> None:
        self.reload_requested = True

    def _reload(self) -> None:
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            new = resolve_config(self.config_path, self.overrides)
        except FacedeblurError as exc:
            log.error("event=reload_failed error=%s action=%s", logfmt_value(exc),
                      logfmt_value("kept the running configuration"))
            self.notifier.notify("READY=1")
            return
        candidate = None
        pipeline_json = new.pipeline.model_dump_json()
        if pipeline_json != self.config.pipeline.model_dump_json():
            # New pipeline settings (a model, a provider...) are tried by one new worker first; only a
            # worker that loaded them replaces the running ones, else the whole running config stays.
            try:
                model_path = resolve_model(new.pipeline.restorer.model)
                result = f"restorer model {model_path} not found (pipeline.restorer.model)" \
                    if not model_path.is_file() else self.pool.try_pipeline(pipeline_json, lambda: self.stop_requested)
            except FacedeblurError as exc:
                result = f"{exc} (pipeline.restorer.model)"
            if isinstance(result, str):
                log.error("event=reload_failed error=%s action=%s", logfmt_value(result),
                          logfmt_value("kept the running configuration; fix the config and reload again"))
                self.notifier.notify("READY=1")
                return
            candidate = result
        fixed = {"outbox": self.settings.outbox, "state": self.settings.state,
                 "failed_folder": self.settings.failed_folder}
        for key, value in fixed.items():
            if getattr(new.daemon, key) != value:
                log.warning("event=reload_ignored key=daemon.%s reason=%s", key, logfmt_value("needs a restart"))
        if new.queue != self.config.queue:
            log.warning("event=reload_ignored key=queue reason=%s", logfmt_value("needs a restart"))
        self.config = new.model_copy(update={"daemon": new.daemon.model_copy(update=fixed), "queue": self.config.queue})
        self.settings = self.config.daemon
        self.outcomes.reconfigure(self.settings)
        self.intake.reconfigure(self.settings)
        self.pool.reconfigure(pipeline_json, self.settings.workers, candidate)
        log.info("event=reloaded config=%s", logfmt_value(self.config_path or "-"))
        self.notifier.notify("READY=1")

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        self._beat("stopping")
        pool = self.pool
        log.info("event=stopping running=%d timeout=%.0fs", len(pool.held_jobs()) if pool else 0,
                 self.settings.shutdown_timeout)
        if self.intake is not None:
            self.intake.stop()
        if pool is not None:
            pool.stopping = True
            deadline = time.monotonic() + self.settings.shutdown_timeout
            try:
                while not self.journal_paused and pool.busy() and time.monotonic() < deadline:
                    self._beat_if_due()
                    pool.collect(timeout=TICK_SECONDS)
            except (JournalUnwritable, sqlite3.DatabaseError) as exc:
                log.error("event=journal_unwritable error=%s action=%s", logfmt_value(exc),
                          logfmt_value("stopping; jobs left running are re-queued at the next start"))
                self.journal_paused = True
            for job_id in pool.abandon():
                try:
                    self.journal.interrupt(job_id)
                except (JournalUnwritable, sqlite3.DatabaseError):
                    pass   # still 'running' in the journal: requeue_interrupted at the next start
                log.warning("event=job_abandoned job=%d reason=%s", job_id,
                            logfmt_value("shutdown timeout reached; it is re-queued for the next start"))
            pool.sweep_staging()
        try:
            if self.index_dirty:
                self._write_index()
        except sqlite3.DatabaseError:
            pass   # a damaged journal is reported by run(); the index is rebuilt at the next start
        self.journal.close()
        log.info("event=stopped")


def run_daemon(config_path: Path | None, overrides: FolderOverrides) -> int:
    config = resolve_config(config_path, overrides)
    return Daemon(config, config_path, overrides).run()
