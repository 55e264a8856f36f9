"""The daemon's main loop: intake (events, rescans, stability, hashing), dispatch to workers, results,
signals (SIGTERM stop, SIGHUP reload) and systemd notifications (READY, WATCHDOG, STATUS, STOPPING).

One thread owns the journal and all decisions; watchdog's observer thread only queues paths and one
hashing thread only reads inputs. Every state change is committed to the journal before the next
step acts on it, which is what lets a restart after `kill -9` pick up exactly where the daemon was.
"""
from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import logging
import os
import shutil
import signal
import sqlite3
import stat
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_connections
from pathlib import Path
from typing import Any

import sdnotify

from ..config import Config, DaemonSettings, load_config
from ..errors import FacedeblurError, NotYetAvailableError
from ..image_files import write_bytes_atomic
from ..safe_text import display_name, encodable
from .journal import Journal, JournalUnwritable, damaged_message, is_damaged
from .logs import q
from .metrics import DaemonMetrics
from .retention import apply_retention
from .review_index import write_review_index
from .scanning import InputRules, Unit
from .stability import InputChanged, Signature, StabilityTracker, sha256_of, signature_of
from .watcher import InboxWatcher
from .worker import STAGING, WorkerHandle, outbox_write_problem, output_name

log = logging.getLogger("facedeblur.daemon")

TICK_SECONDS = 0.2
INDEX_MIN_INTERVAL = 2.0   # seconds between rebuilds of OUTBOX/index.html while jobs finish quickly
MODEL_LOAD_TIMEOUT = 300.0   # seconds a reload waits for a worker to load new models
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
    # The daemon's own folders inside an inbox would be picked up as input.
    inboxes = [i.absolute() for i in daemon.inbox]
    for name, folder in (("outbox", daemon.outbox), ("state", daemon.state)):
        folder = folder.absolute()
        if any(folder == i or i in folder.parents for i in inboxes):
            raise FacedeblurError(f"{name} folder {folder} is inside an inbox; put it outside every inbox")
    absolute = {k: (v.absolute() if isinstance(v, Path) else v) for k, v in
                (("outbox", daemon.outbox), ("state", daemon.state), ("done_folder", daemon.done_folder),
                 ("failed_folder", daemon.failed_folder))}
    absolute["inbox"] = inboxes
    return config.model_copy(update={"daemon": daemon.model_copy(update=absolute)})


class Daemon:
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
        self.workers: list[WorkerHandle] = []
        self.hashing: dict[concurrent.futures.Future, tuple[Unit, Signature]] = {}
        self.hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="facedeblur-hash")
        self.ever_ready = False
        self.index_dirty = True
        self.index_written = 0.0
        self.respawn_at = 0.0      # when to start workers again after one failed to load its models
        self.respawn_delay = 0.0

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
        # Leftovers of runs cut short: never published, safe to drop.
        shutil.rmtree(self.outbox / STAGING, ignore_errors=True)

    def _recover(self) -> None:
        for job in self.journal.requeue_interrupted():
            log.info("event=job_requeued job=%d input=%s reason=%s", job.id, q(job.rel_path),
                     q("it was running when the daemon stopped"))
            if job.interruptions + 1 >= MAX_INTERRUPTIONS:
                self._give_up(self.journal.get(job.id), f"the daemon stopped {MAX_INTERRUPTIONS} times while "
                              "processing this input (crash, power loss or out of memory); check it by hand")

    def _start_workers(self) -> None:
        pipeline_json = self.config.pipeline.model_dump_json()
        while len([w for w in self.workers if not w.retire]) < self.settings.workers:
            index = max([w.index for w in self.workers], default=-1) + 1
            worker = WorkerHandle(index, pipeline_json)
            self.workers.append(worker)
            log.info("event=worker_started worker=%d pid=%d", worker.index, worker.pid)

    def _start_watcher(self) -> None:
        self.rules = InputRules(self.settings)
        self.tracker = StabilityTracker(self.settings.stable_seconds, self.rules.included_file,
                                        self.settings.follow_symlinks)
        self.watcher = InboxWatcher(self.settings.inbox, self.settings.recursive, self.settings.polling,
                                    self.settings.poll_interval)
        self.watcher.start()

    def run(self) -> int:
        try:
            return self._run()
        except sqlite3.DatabaseError as exc:
            if is_damaged(exc):
                raise FacedeblurError(damaged_message(self.state_dir / "journal.sqlite3", exc)) from None
            raise
        except JournalUnwritable as exc:
            # At start-up (re-queueing interrupted jobs): exit 1, so systemd starts it again a little later.
            log.error("event=journal_unwritable error=%s action=%s", q(exc),
                      q("stopped; free space in the state folder, systemd restarts the daemon"))
            return 1

    def _run(self) -> int:
        self._prepare_folders()
        self.journal = Journal(self.state_dir)
        self.journal_paused = False
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
        self._start_workers()
        self._start_watcher()
        log.info("event=started inbox=%s outbox=%s state=%s workers=%d polling=%s", q(",".join(map(str, self.settings.inbox))),
                 q(self.outbox), q(self.state_dir), self.settings.workers, self.settings.polling)
        self._rescan()
        try:
            return self._loop()
        finally:
            self._shutdown()

    # ---- the loop -----------------------------------------------------------------------------------------
    def _loop(self) -> int:
        next_rescan = time.monotonic() + self.settings.rescan_seconds
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        ping_every = watchdog_usec / 2e6 if watchdog_usec else 10.0
        next_ping = 0.0
        while not self.stop_requested:
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
                if self.respawn_at and time.monotonic() >= self.respawn_at:
                    self.respawn_at = 0.0
                    self._start_workers()
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                self._take_events()
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    self._housekeeping()
                    next_rescan = time.monotonic() + self.settings.rescan_seconds
                self._promote_stable()
                self._finish_hashing()
                self._dispatch()
                self._check_timeouts()
                if self.index_dirty and time.monotonic() - self.index_written >= INDEX_MIN_INTERVAL:
                    self._write_index()
                if time.monotonic() >= next_ping:
                    if not self.watcher.alive():
                        log.error("event=watcher_died reason=%s", q("the filesystem observer stopped; restarting it"))
                        self._start_watcher()
                    self._notify_status()
                    next_ping = time.monotonic() + ping_every
                self._collect_results(timeout=TICK_SECONDS)
            except JournalUnwritable as exc:
                self.journal_paused = True
                log.error("event=journal_unwritable error=%s action=%s", q(exc),
                          q("intake and new jobs paused until the state folder takes writes again"))
        return 0

    def _try_resume(self) -> None:
        if not self.journal.writable():
            return
        try:
            held = {w.job_id for w in self.workers if w.job_id is not None}
            orphans = self.journal.requeue_orphans(held)
        except JournalUnwritable:
            return
        self.journal_paused = False
        log.info("event=journal_writable action=%s requeued=%s", q("intake and jobs resumed"),
                 ",".join(map(str, orphans)) or "-")

    def _notify_status(self) -> None:
        counts = self.journal.counts()
        self.metrics.queue_depth.set(counts["queued"])
        self.metrics.running.set(counts["running"])
        # Say so when no worker can take jobs (models failed to load): the queue is stalled, not healthy.
        stalled = "" if any(w.ready for w in self.workers) or not self.ever_ready else \
            "no worker has its models loaded (see event=model_load_failed); "
        self.notifier.notify(f"WATCHDOG=1\nSTATUS={stalled}queued {counts['queued']}, running {counts['running']}, "
                             f"done {counts['done']}, failed {counts['failed']}")

    # ---- intake -------------------------------------------------------------------------------------------
    def _consider(self, unit: Unit) -> None:
        if unit in self.tracker or any(u == unit for u, _ in self.hashing.values()):
            return
        signature = signature_of(unit, self.rules.included_file, self.settings.follow_symlinks)
        if signature is None:
            return
        if self.journal.known(str(unit.path), signature.size, signature.mtime_ns):
            return
        self.tracker.touch(unit)

    def _take_events(self) -> None:
        for path, is_directory in self.watcher.drain():
            unit = self.rules.unit_for(path)
            if unit is not None:
                if unit in self.tracker:
                    self.tracker.touch(unit)   # still changing: restart its clock
                else:
                    self._consider(unit)
            elif is_directory and path.is_dir():
                # A folder moved or created in the inbox: whatever it holds is new.
                inbox = self.rules.inbox_of(path)
                if inbox is not None:
                    for found in self.rules.scan(path, inbox):
                        self._consider(found)

    def _rescan(self) -> None:
        for unit in self.rules.scan_all():
            self._consider(unit)

    def _promote_stable(self) -> None:
        stable, vanished = self.tracker.poll()
        for unit in vanished:
            log.info("event=input_vanished input=%s reason=%s", q(unit.rel_path), q("removed before it was stable"))
        for unit, signature in stable:
            if self.journal.known(str(unit.path), signature.size, signature.mtime_ns):
                continue
            future = self.hasher.submit(sha256_of, unit, signature, self.settings.follow_symlinks)
            self.hashing[future] = (unit, signature)

    def _finish_hashing(self) -> None:
        for future in [f for f in self.hashing if f.done()]:
            unit, signature = self.hashing.pop(future)
            try:
                sha = future.result()
            except FileNotFoundError:
                log.info("event=input_vanished input=%s reason=%s", q(unit.rel_path), q("removed while hashing"))
                continue
            except InputChanged:
                self.tracker.touch(unit)   # swapped or replaced (e.g. by a symlink) since it was checked
                continue
            except OSError as exc:
                sha = None   # unreadable: queued anyway, so the failure is recorded and retried
                log.warning("event=input_unreadable input=%s error=%s", q(unit.rel_path), q(exc.strerror or exc))
            if signature_of(unit, self.rules.included_file, self.settings.follow_symlinks) != signature:
                self.tracker.touch(unit)   # changed while we read it: wait for it to settle again
                continue
            self._intake(unit, signature, sha)

    def _intake(self, unit: Unit, signature: Signature, sha: str | None) -> None:
        fields = dict(path=str(unit.path), inbox=str(unit.inbox), rel_path=unit.rel_path, kind=unit.kind,
                      size=signature.size, mtime_ns=signature.mtime_ns, sha256=sha)
        earlier = self.journal.done_with_hash(sha) if (sha and self.settings.skip_duplicates) else None
        if earlier is not None:
            job_id = self.journal.add(**fields, state="duplicate", duplicate_of=earlier.id,
                                      error=f"same content as job {earlier.id} ({earlier.rel_path})")
            self.metrics.duplicates.inc()
            log.info("event=duplicate job=%d input=%s same_as=%d", job_id, q(unit.rel_path), earlier.id)
            if earlier.state == "done":
                self._after_done(self.journal.get(job_id))
            # else: it shares the fate of the earlier job, settled when that one is (_settle_duplicates)
            return
        job_id = self.journal.add(**fields)
        log.info("event=queued job=%d input=%s kind=%s bytes=%d", job_id, q(unit.rel_path), unit.kind,
                 signature.size)

    # ---- dispatch and results -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        idle = [w for w in self.workers if w.ready and w.job_id is None and not w.retire]
        if not idle:
            return
        busy = {w.job_id for w in self.workers if w.job_id is not None}
        for worker, job in zip(idle, self.journal.next_queued(len(idle), exclude=busy)):
            self.journal.mark_running(job.id, worker.pid)
            worker.job_id, worker.job_started = job.id, time.monotonic()
            worker.send({"id": job.id, "path": job.path, "inbox": job.inbox, "rel_path": job.rel_path,
                         "sha256": job.sha256, "size": job.size, "outbox": str(self.outbox),
                         "name": output_name(job.rel_path, job.id), "kind": job.kind,
                         "follow_symlinks": self.settings.follow_symlinks})
            log.info("event=job_started job=%d input=%s attempt=%d worker=%d", job.id, q(job.rel_path),
                     job.attempts + 1, worker.index)

    def _collect_results(self, timeout: float) -> None:
        """Handle worker messages (ready, results) and worker deaths; waits up to `timeout` for one."""
        by_conn = {w.conn: w for w in self.workers}
        ready = wait_connections(list(by_conn), timeout=timeout) if by_conn else time.sleep(timeout) or []
        for conn in ready:
            worker = by_conn[conn]
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                self._worker_died(worker)
                continue
            if kind == "ready":
                worker.ready, worker.load_seconds = True, payload
                self.respawn_delay = 0.0
                self.metrics.model_load_seconds.set(payload)
                log.info("event=worker_ready worker=%d model_load_seconds=%.2f", worker.index, payload)
                if not self.ever_ready and all(w.ready for w in self.workers):
                    self.ever_ready = True
                    self.notifier.notify("READY=1")
                    log.info("event=ready")
            elif kind == "load_failed":
                self._remove_worker(worker)
                if not self.ever_ready:
                    raise FacedeblurError(f"the models could not be loaded: {payload}")
                # Not in a tight loop (a GPU that vanished, a model file removed): back off, up to 5 minutes.
                self.respawn_delay = min(max(self.respawn_delay * 2, 5.0), 300.0)
                self.respawn_at = time.monotonic() + self.respawn_delay
                log.error("event=model_load_failed worker=%d error=%s retry_in=%.0fs", worker.index, q(payload),
                          self.respawn_delay)
            elif kind == "result":
                worker.job_id = None
                self._handle_result(payload)
                if worker.retire:
                    self._remove_worker(worker)
                    self._start_workers()
        for worker in list(self.workers):
            if not worker.process.is_alive() and worker in self.workers and not _has_message(worker):
                self._worker_died(worker)

    def _check_timeouts(self) -> None:
        """daemon.job_timeout: a job that hangs (a stuck decoder, a wedged GPU) is stopped and retried."""
        limit = self.settings.job_timeout
        if not limit:
            return
        for worker in list(self.workers):
            if worker.job_id is None or time.monotonic() - worker.job_started <= limit:
                continue
            job_id = worker.job_id
            self.workers.remove(worker)
            worker.kill()
            log.error("event=job_timeout job=%d worker=%d limit=%.0fs", job_id, worker.index, limit)
            self._failed_run(self.journal.get(job_id), f"timed out after {limit:g} s (daemon.job_timeout); the "
                             "worker was stopped", input_fault=True)
            self._start_workers()

    def _remove_worker(self, worker: WorkerHandle) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        worker.stop()

    def _worker_died(self, worker: WorkerHandle) -> None:
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        worker.process.join(timeout=5)   # reap it, so the exit code is known
        code = worker.process.exitcode
        worker.kill()
        log.error("event=worker_died worker=%d exit_code=%s job=%s", worker.index, code, worker.job_id)
        if worker.job_id is not None and not self.stop_requested:
            job = self.journal.get(worker.job_id)
            error = (f"the worker process died (exit code {code}) while processing this input, "
                     "e.g. out of memory or a crash in a decoder")
            # FFmpeg's encoders can crash outright on a full disk: then the machine, not the input, is at fault.
            cause = outbox_write_problem(self.outbox)
            if cause is not None:
                error += f" [{cause}; the job is retried once {self.outbox} is writable]"
            self._failed_run(job, error, input_fault=cause is None)
        if not self.stop_requested:
            self._start_workers()

    def _handle_result(self, result: dict[str, Any]) -> None:
        job = self.journal.get(result["job_id"])
        if result["ok"]:
            frames, faces, seconds = result.get("frames"), result.get("faces"), result.get("seconds")
            self.journal.mark_done(job.id, result["output"], seconds, frames, faces)
            self.metrics.job_done(seconds, frames, faces)
            self.index_dirty = True
            log.info("event=job_done job=%d input=%s output=%s seconds=%s frames=%s faces=%s%s", job.id,
                     q(job.rel_path), q(result["output"]), f"{seconds:.2f}" if seconds else "-", frames, faces,
                     " already_published=true" if result.get("already_published") else "")
            self._after_done(self.journal.get(job.id))
            self._settle_duplicates(job, None)
        elif result.get("vanished"):
            self.journal.mark_failed(job.id, result["error"], None)
            self.metrics.jobs_failed.inc()
            self._write_error_note(job, result["error"], None)
            log.warning("event=job_failed job=%d input=%s error=%s", job.id, q(job.rel_path), q(result["error"]))
            self._settle_duplicates(job, result["error"])
        else:
            self._failed_run(job, result["error"], input_fault=result.get("input_fault", True),
                             permanent=result.get("permanent", False))

    def _failed_run(self, job, error: str, input_fault: bool, permanent: bool = False) -> None:
        """`permanent`: the input can never succeed (not a video, empty, a symlink): failed at once, no retry."""
        job = self.journal.get(job.id)
        if input_fault and (permanent or job.attempts >= self.settings.max_attempts):
            self._give_up(job, error)
            return
        attempts = max(job.attempts, 1)
        # The input's failures back off; the machine's (disk full) retry at a steady pace, at least 1 s apart.
        delay = self.settings.retry_seconds * 2 ** (attempts - 1) if input_fault else max(self.settings.retry_seconds, 1.0)
        self.journal.mark_retry(job.id, error, min(delay, 3600), count_attempt=input_fault)
        self.metrics.jobs_retried.inc()
        log.warning("event=job_retry job=%d input=%s attempt=%d of=%d retry_in=%.0fs counted=%s error=%s", job.id,
                    q(job.rel_path), job.attempts, self.settings.max_attempts, delay, input_fault, q(error))

    # ---- outcomes -----------------------------------------------------------------------------------------
    def _give_up(self, job, error: str) -> None:
        copy = self._copy_to_failed(job)
        self._write_error_note(job, error, copy)
        self.journal.mark_failed(job.id, error, str(copy) if copy else None)
        self.metrics.jobs_failed.inc()
        log.error("event=job_failed job=%d input=%s attempts=%d failed_copy=%s error=%s", job.id, q(job.rel_path),
                  job.attempts, q(copy or "-"), q(error))
        self._settle_duplicates(job, error)

    def _settle_duplicates(self, job, error: str | None) -> None:
        """Inputs recognised as copies of `job` while it was still queued share its outcome: when it is done
        they are done with it (and `after:` applies to them); when it fails they fail with it, each in
        failed/ with the reason, since the same bytes cannot succeed either."""
        for duplicate in self.journal.duplicates_of(job.id):
            if error is None:
                self._after_done(duplicate)
            else:
                self._give_up(duplicate, f"same content as {job.rel_path} (job {job.id}), which failed: {error}")

    def _failed_name(self, job) -> str:
        suffix = Path(job.path).suffix if job.kind == "file" else ""
        return output_name(job.rel_path, job.id) + suffix

    def _copy_to_failed(self, job) -> Path | None:
        """The input goes to failed/ (copied when `after: keep`, since inputs are never removed then)."""
        source = Path(job.path)
        target = self.failed_dir / self._failed_name(job)
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
                                    copy_function=lambda s, d: _copy_file_nofollow(Path(s), Path(d), follow),
                                    ignore=None if follow else
                                    lambda folder, names: [n for n in names if os.path.islink(os.path.join(folder, n))])
                else:
                    _copy_file_nofollow(source, temp, self.settings.follow_symlinks)
                os.replace(temp, target)
            else:
                shutil.move(str(source), str(target))
            return target
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
            log.warning("event=failed_copy_error job=%d input=%s error=%s", job.id, q(job.rel_path),
                        q(exc.strerror or exc))
            return None

    def _write_error_note(self, job, error: str, copy: Path | None) -> None:
        note = (f"input: {display_name(job.path)}\nrelative to inbox: {display_name(job.rel_path)}\n"
                f"sha256: {job.sha256 or 'unknown'}\njob: {job.id}\nattempts: {job.attempts}\n"
                f"copy: {display_name(copy) if copy else 'none (input could not be copied)'}\n"
                f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\nerror: {encodable(error)}\n")
        try:
            write_bytes_atomic(self.failed_dir / (self._failed_name(job) + ".error.txt"), note.encode("utf-8"))
        except OSError as exc:
            log.warning("event=error_note_failed job=%d error=%s", job.id, q(exc.strerror or exc))

    def _after_done(self, job) -> None:
        """`after: keep | move | delete` for an input whose output is published (or that was a duplicate)."""
        source = Path(job.path)
        try:
            if self.settings.after == "delete":
                shutil.rmtree(source) if source.is_dir() and not source.is_symlink() else source.unlink()
            elif self.settings.after == "move":
                target = self.settings.done_folder / job.rel_path
                if os.path.lexists(target):
                    target = target.with_name(self._failed_name(job))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event=after_action_failed job=%d action=%s error=%s", job.id, self.settings.after,
                        q(exc.strerror or exc))

    def _write_index(self) -> None:
        self.index_dirty, self.index_written = False, time.monotonic()
        try:
            write_review_index(self.journal, self.outbox)
        except OSError as exc:
            log.warning("event=index_failed error=%s", q(exc.strerror or exc))

    def _housekeeping(self) -> None:
        try:
            if apply_retention(self.journal, self.outbox, self.settings.retention_days,
                               self.settings.retention_max_gb):
                self.index_dirty = True
        except OSError as exc:
            log.warning("event=retention_failed error=%s", q(exc.strerror or exc))

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
            log.error("event=reload_failed error=%s action=%s", q(exc), q("kept the running configuration"))
            self.notifier.notify("READY=1")
            return
        candidate = None
        if new.pipeline.model_dump_json() != self.config.pipeline.model_dump_json():
            # New pipeline settings (a model, a provider...) are tried by one new worker first; only a
            # worker that loaded them replaces the running ones, else the whole running config stays.
            result = self._try_pipeline(new)
            if isinstance(result, str):
                log.error("event=reload_failed error=%s action=%s", q(result),
                          q("kept the running configuration; fix the config and reload again"))
                self.notifier.notify("READY=1")
                return
            candidate = result
        old = self.settings
        fixed = {"outbox": old.outbox, "state": old.state, "failed_folder": old.failed_folder}
        for key, value in fixed.items():
            if getattr(new.daemon, key) != value:
                log.warning("event=reload_ignored key=daemon.%s reason=%s", key, q("needs a restart"))
        self.config = new.model_copy(update={"daemon": new.daemon.model_copy(update=fixed)})
        self.settings = self.config.daemon
        if (self.settings.inbox, self.settings.recursive, self.settings.polling, self.settings.poll_interval) != \
                (old.inbox, old.recursive, old.polling, old.poll_interval):
            self.watcher.stop()
            self._start_watcher()
            self._rescan()
        else:
            self.rules = InputRules(self.settings)
            self.tracker.stable_seconds = self.settings.stable_seconds
            self.tracker.include_file = self.rules.included_file
            self.tracker.follow_symlinks = self.settings.follow_symlinks
        pipeline_json = self.config.pipeline.model_dump_json()
        for worker in self.workers:
            if worker.pipeline_json != pipeline_json or len(self.workers) > self.settings.workers:
                worker.retire = True   # replaced once its current job is finished
        for worker in [w for w in self.workers if w.retire and w.job_id is None]:
            self._remove_worker(worker)
        if candidate is not None:
            self.workers.append(candidate)
        self._start_workers()
        log.info("event=reloaded config=%s", q(self.config_path or "-"))
        self.notifier.notify("READY=1")

    def _try_pipeline(self, new: Config) -> WorkerHandle | str:
        """Start one worker with `new` pipeline settings and wait for its models: the ready worker, or why not."""
        model = new.pipeline.restorer.model
        if model is not None and not Path(model).is_file():
            return f"restorer model {model} not found (pipeline.restorer.model)"
        index = max([w.index for w in self.workers], default=-1) + 1
        candidate = WorkerHandle(index, new.pipeline.model_dump_json())
        deadline = time.monotonic() + MODEL_LOAD_TIMEOUT
        while time.monotonic() < deadline and not self.stop_requested:
            self.notifier.notify("WATCHDOG=1")   # model loading can take a while on a cold CPU
            if candidate.conn.poll(1.0):
                try:
                    kind, payload = candidate.conn.recv()
                except (EOFError, OSError):
                    kind, payload = "load_failed", f"the worker exited (code {candidate.process.exitcode})"
                if kind == "ready":
                    candidate.ready, candidate.load_seconds = True, payload
                    log.info("event=worker_ready worker=%d model_load_seconds=%.2f", candidate.index, payload)
                    return candidate
                candidate.kill()
                return f"the new models could not be loaded: {payload}"
            if not candidate.process.is_alive() and not _has_message(candidate):
                candidate.kill()
                return f"the worker exited while loading the new models (code {candidate.process.exitcode})"
        candidate.kill()
        return "stopping" if self.stop_requested else f"the new models did not load within {MODEL_LOAD_TIMEOUT:.0f} s"

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        log.info("event=stopping running=%d timeout=%.0fs", sum(w.job_id is not None for w in self.workers),
                 self.settings.shutdown_timeout)
        self.watcher.stop()   # _shutdown runs only after _start_watcher (the finally in _run)
        self.hasher.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        try:
            while not getattr(self, "journal_paused", False) and any(w.job_id is not None for w in self.workers) \
                    and time.monotonic() < deadline:
                self._collect_results(timeout=TICK_SECONDS)
        except (JournalUnwritable, sqlite3.DatabaseError) as exc:
            log.error("event=journal_unwritable error=%s action=%s", q(exc),
                      q("stopping; jobs left running are re-queued at the next start"))
            self.journal_paused = True
        for worker in list(self.workers):
            if worker.job_id is not None:
                # Abandoned: killed before it published; the staging leftovers go, the job is re-run next time.
                worker.kill()
                try:
                    self.journal.interrupt(worker.job_id)
                except (JournalUnwritable, sqlite3.DatabaseError):
                    pass   # still 'running' in the journal: requeue_interrupted at the next start
                log.warning("event=job_abandoned job=%d reason=%s", worker.job_id,
                            q("shutdown timeout reached; it is re-queued for the next start"))
                worker.job_id = None
            else:
                worker.stop()
        self.workers.clear()
        shutil.rmtree(self.outbox / STAGING, ignore_errors=True)
        try:
            if self.index_dirty:
                self._write_index()
        except sqlite3.DatabaseError:
            pass   # a damaged journal is reported by run(); the index is rebuilt at the next start
        self.journal.close()
        log.info("event=stopped")


def _copy_file_nofollow(source: Path, target: Path, follow_symlinks: bool) -> None:
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


def _has_message(worker: WorkerHandle) -> bool:
    try:
        return worker.conn.poll()
    except (OSError, EOFError):
        return False


def run_daemon(config_path: Path | None, overrides: FolderOverrides) -> int:
    config = resolve_config(config_path, overrides)
    return Daemon(config, config_path, overrides).run()
