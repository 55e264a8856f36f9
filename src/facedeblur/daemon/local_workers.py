"""The local worker pool (`queue.backend: local`): worker processes on this machine, each with its models loaded,
fed one job at a time over a pipe. The daemon's loop asks it for idle capacity, hands it jobs, and gets back
results, lost jobs (a worker died or timed out) and readiness through the callbacks it was built with.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

from pydantic import ValidationError

from ..errors import FacedeblurError
from .journal import Job, Journal
from .logs import logfmt_value
from .messages import JobProgress, JobTicket
from .metrics import DaemonMetrics
from .pool import PoolCallbacks
from .worker import STAGING, WorkerHandle

log = logging.getLogger("facedeblur.daemon")

MODEL_LOAD_TIMEOUT = 300.0   # seconds a reload waits for a worker to load new models


class LocalWorkerPool:
    def __init__(self, pipeline_json: str, size: int, outbox: Path, metrics: DaemonMetrics, callbacks: PoolCallbacks):
        self.pipeline_json = pipeline_json
        self.size = size
        self.outbox = outbox
        self.metrics = metrics
        self.report = callbacks
        self.workers: list[WorkerHandle] = []
        self.ever_ready = False
        self.stopping = False
        self.respawn_at = 0.0      # when to start workers again after one failed to load its models
        self.respawn_delay = 0.0

    # ---- start-up and housekeeping -----------------------------------------------------------------------------
    def recover(self, journal: Journal) -> list[Job]:
        """The workers died with the daemon: every job it shows running is queued again."""
        return journal.requeue_interrupted()

    def sweep_staging(self) -> None:
        """Leftovers of runs cut short were never published: safe to drop while no worker holds a job."""
        if not self.held_jobs():
            shutil.rmtree(self.outbox / STAGING, ignore_errors=True)

    # ---- capacity -----------------------------------------------------------------------------------------
    def fill(self) -> None:
        """Start workers until `size` are alive (retired ones do not count)."""
        while len([w for w in self.workers if not w.retire]) < self.size:
            index = max([w.index for w in self.workers], default=-1) + 1
            worker = WorkerHandle(index, self.pipeline_json)
            self.workers.append(worker)
            log.info("event=worker_started worker=%d pid=%d", worker.index, worker.pid)

    def respawn_if_due(self) -> None:
        if self.respawn_at and time.monotonic() >= self.respawn_at:
            self.respawn_at = 0.0
            self.fill()

    def idle(self) -> list[WorkerHandle]:
        return [w for w in self.workers if w.ready and w.job_id is None and not w.retire]

    def held_jobs(self) -> set[int]:
        return {w.job_id for w in self.workers if w.job_id is not None}

    def stalled(self) -> bool:
        """True when no worker can take jobs although they once could (models failed to load since)."""
        return self.ever_ready and not any(w.ready for w in self.workers)

    def start_job(self, worker: WorkerHandle, ticket: JobTicket) -> None:
        worker.job_id, worker.job_started = ticket.id, time.monotonic()
        worker.send(ticket)

    # ---- messages -----------------------------------------------------------------------------------------
    def collect(self, timeout: float) -> None:
        """Handle worker messages (ready, results) and worker deaths; waits up to `timeout` for one."""
        by_conn = {w.conn: w for w in self.workers}
        ready = wait_connections(list(by_conn), timeout=timeout) if by_conn else time.sleep(timeout) or []
        for conn in ready:
            worker = by_conn[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self._worker_died(worker)
                continue
            except Exception as exc:  # noqa: BLE001 - an unpicklable message: dropped, the worker goes on
                log.error("event=message_rejected worker=%d error=%s", worker.index, logfmt_value(exc))
                continue
            if not (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str)):
                log.error("event=message_rejected worker=%d error=%s", worker.index,
                          logfmt_value(f"expected (kind, payload), got {type(message).__name__}"))
                continue
            kind, payload = message
            if kind == "progress":
                self._take_progress(worker, payload)
            elif kind == "ready":
                worker.ready, worker.load_seconds = True, payload
                self.respawn_delay = 0.0
                self.metrics.model_load_seconds.set(payload)
                log.info("event=worker_ready worker=%d model_load_seconds=%.2f", worker.index, payload)
                if not self.ever_ready and all(w.ready for w in self.workers):
                    self.ever_ready = True
                    self.report.on_first_ready()
            elif kind == "load_failed":
                self._remove(worker)
                if not self.ever_ready:
                    raise FacedeblurError(f"the models could not be loaded: {payload}")
                # Not in a tight loop (a GPU that vanished, a model file removed): back off, up to 5 minutes.
                self.respawn_delay = min(max(self.respawn_delay * 2, 5.0), 300.0)
                self.respawn_at = time.monotonic() + self.respawn_delay
                log.error("event=model_load_failed worker=%d error=%s retry_in=%.0fs", worker.index,
                          logfmt_value(payload),
                          self.respawn_delay)
            elif kind == "result":
                worker.job_id = None
                self.report.on_result(payload)
                if worker.retire:
                    self._remove(worker)
                    self.fill()
        for worker in list(self.workers):
            if not worker.process.is_alive() and worker in self.workers and not _has_message(worker):
                self._worker_died(worker)

    def _take_progress(self, worker: WorkerHandle, payload: object) -> None:
        """A progress report, checked like any message: of the job this worker holds, every field valid."""
        try:
            progress = JobProgress.model_validate(payload)
        except ValidationError as exc:
            log.error("event=progress_rejected worker=%d error=%s", worker.index,
                      logfmt_value("; ".join(e["msg"] for e in exc.errors()[:3])))
            return
        if progress.job_id != worker.job_id:
            log.warning("event=progress_rejected worker=%d job=%d reason=%s", worker.index, progress.job_id,
                        logfmt_value(f"the worker holds job {worker.job_id}"))
            return
        self.report.on_progress(progress)

    def check_timeouts(self, limit: float | None) -> None:
        """daemon.job_timeout: a job that hangs (a stuck decoder, a wedged GPU) is stopped and retried."""
        if not limit:
            return
        for worker in list(self.workers):
            if worker.job_id is None or time.monotonic() - worker.job_started <= limit:
                continue
            job_id = worker.job_id
            self.workers.remove(worker)
            worker.kill()
            log.error("event=job_timeout job=%d worker=%d limit=%.0fs", job_id, worker.index, limit)
            self.report.on_lost(job_id, f"timed out after {limit:g} s (daemon.job_timeout); the worker was stopped",
                                False, True)
            self.fill()

    def _remove(self, worker: WorkerHandle) -> None:
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
        if worker.job_id is not None and not self.stopping:
            self.report.on_lost(worker.job_id, f"the worker process died (exit code {code}) while processing this "
                                "input, e.g. out of memory or a crash in a decoder", True, True)
        if not self.stopping:
            self.fill()

    # ---- reload -------------------------------------------------------------------------------------------
    def try_pipeline(self, pipeline_json: str, stop_requested: Callable[[], bool]) -> WorkerHandle | str:
        """Start one worker with new pipeline settings and wait for its models: the ready worker, or why not."""
        index = max([w.index for w in self.workers], default=-1) + 1
        candidate = WorkerHandle(index, pipeline_json)
        deadline = time.monotonic() + MODEL_LOAD_TIMEOUT
        while time.monotonic() < deadline and not stop_requested():
            self.report.keep_alive()   # model loading can take a while on a cold CPU
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
        return "stopping" if stop_requested() else f"the new models did not load within {MODEL_LOAD_TIMEOUT:.0f} s"

    def reconfigure(self, pipeline_json: str, size: int, candidate: WorkerHandle | None) -> None:
        """Workers with other settings, or beyond `size`, are replaced once their current job is finished."""
        self.pipeline_json, self.size = pipeline_json, size
        for worker in self.workers:
            if worker.pipeline_json != pipeline_json or len(self.workers) > size:
                worker.retire = True
        for worker in [w for w in self.workers if w.retire and w.job_id is None]:
            self._remove(worker)
        if candidate is not None:
            self.workers.append(candidate)
        self.fill()

    # ---- shutdown -----------------------------------------------------------------------------------------
    def busy(self) -> bool:
        return any(w.job_id is not None for w in self.workers)

    def abandon(self) -> list[int]:
        """Kill workers still holding a job (shutdown timeout) and stop the idle ones; the abandoned job ids."""
        self.stopping = True
        abandoned = []
        for worker in list(self.workers):
            if worker.job_id is not None:
                worker.kill()   # killed before it published; the staging leftovers go, the job is re-run
                abandoned.append(worker.job_id)
                worker.job_id = None
            else:
                worker.stop()
        self.workers.clear()
        return abandoned


def _has_message(worker: WorkerHandle) -> bool:
    try:
        return worker.conn.poll()
    except (OSError, EOFError):
        return False
