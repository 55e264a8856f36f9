"""The remote worker pool (`queue.backend: celery`): jobs go to `facedeblur worker` processes on any machine
through Celery and Redis; the daemon's loop drives it exactly like LocalWorkerPool.

Exactly-once across machines rests on three rules kept here:
  * every dispatch is a new attempt number (the journal's `dispatches`), and the task carries it;
  * a worker only stages its output (OUTBOX/.staging/NAME.a<attempt>); this coordinator publishes it, and only
    when the journal still shows that attempt running. A late or duplicate result (a worker that came back
    after its job was sent again, a task Redis re-delivered) is discarded, its staging folder removed;
  * each running job holds a lease, renewed by the heartbeats of the worker holding it. A lease that runs out
    (the worker died, the broker lost the task) sends the job again as a new attempt. One that a worker had
    picked up counts against the input (a clip that kills its worker every time ends in failed/); one never
    picked up does not (a broker restart is not the clip's fault).
"""
from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import QueueSettings
from .broker import (TASK_NAME, TASK_QUEUE, connect, live_key, live_workers, make_celery_app, message_secret,
                     progress_key, require_queue_extra, results_key)
from .journal import Job, Journal
from .logs import logfmt_value
from .messages import JobProgress, JobResult, JobTicket, MessageRejected, Outcome, WorkerHeartbeat, seal, unseal_raw
from .metrics import DaemonMetrics
from .pool import PoolCallbacks
from .worker import STAGING, find_published, output_name, publish

log = logging.getLogger("facedeblur.daemon")

RESULTS_PER_TICK = 50
MAX_PROGRESS_FIELDS = 1000    # progress reports held in Redis at once (one per running job)
MAX_PROGRESS_BYTES = 4096     # a sealed JobProgress is about 300 bytes
# OUTBOX/.staging/NAME-j<job>.a<attempt>: a remote worker's staged output. Around it while it works: its
# ".input" hold folder and the pipeline's own temp folder (.NAME-j<job>.a<attempt>.facedeblur-tmp-XXXX).
STAGED_OUTPUT = re.compile(r"-j(\d+)\.a(\d+)$")
ATTEMPT_FOLDER = re.compile(r"-j(\d+)\.a(\d+)(?:\.input|\.facedeblur-tmp-\w+)?$")


@dataclass
class RemoteSlot:
    """Free capacity on some worker; the loop only needs `.pid` and `.index` (a remote job has no local pid)."""
    index: int
    pid: int = 0


@dataclass
class Lease:
    job_id: int
    attempt: int
    name: str
    sha256: str | None
    dispatched: float
    expires: float
    picked_up: bool = False   # a worker's heartbeat named this attempt

    @property
    def staging_name(self) -> str:
        return f"{self.name}.a{self.attempt}"


class CeleryWorkerPool:
    def __init__(self, queue: QueueSettings, outbox: Path, journal_id: str, live_attempt: Callable[[int], int | None],
                 metrics: DaemonMetrics, callbacks: PoolCallbacks):
        """`live_attempt(job_id)`: the attempt the journal shows running, or None; it alone decides publishing."""
        require_queue_extra("facedeblur watch")
        self.secret = message_secret(queue)
        import redis
        self._redis_errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self.queue = queue
        self.outbox = outbox
        self.journal_id = journal_id
        self.live_attempt = live_attempt
        self.metrics = metrics
        self.report = callbacks
        self.client = connect(queue, "facedeblur watch")
        self.app = make_celery_app(queue)
        self.leases: dict[int, Lease] = {}
        self.workers: list[WorkerHeartbeat] = []
        self.heartbeats_read_at = 0.0
        self.rejected_heartbeats: set[str] = set()   # worker keys refused at the last read: logged once each
        self.broker_down_since: float | None = None
        self.ever_ready = False
        self.stopping = False

    # ---- capacity -----------------------------------------------------------------------------------------
    def fill(self) -> None:
        """Remote workers come and go by themselves; the coordinator is ready once it reaches the broker."""
        if not self.ever_ready:
            self.ever_ready = True
            self.report.on_first_ready()

    def respawn_if_due(self) -> None:
        pass

    def idle(self) -> list[RemoteSlot]:
        """One slot per free thread of the live workers: a task is sent only when a worker can take it at
        once, so its lease measures work, not time spent waiting in the queue."""
        if self.broker_down_since is not None:
            return []
        slots = sum(worker.concurrency for worker in self.workers)
        ours = {(lease.job_id, lease.attempt) for lease in self.leases.values()}
        stale = sum(1 for worker in self.workers for held in worker.jobs
                    if held.journal_id == self.journal_id and (held.job_id, held.attempt) not in ours)
        return [RemoteSlot(i) for i in range(max(slots - len(self.leases) - stale, 0))]

    def held_jobs(self) -> set[int]:
        return set(self.leases)

    def stalled(self) -> bool:
        return self.ever_ready and not self.workers

    def start_job(self, slot: RemoteSlot, ticket: JobTicket) -> None:
        now = time.monotonic()
        self.leases[ticket.id] = Lease(ticket.id, ticket.attempt, ticket.name, ticket.sha256, now,
                                       now + self.queue.lease_seconds)
        try:
            self._mark_live(ticket.id, ticket.attempt)
            self.app.send_task(TASK_NAME, args=[seal(ticket, self.secret)], queue=TASK_QUEUE)
        except Exception as exc:  # noqa: BLE001 - kombu's errors vary by transport; the lease re-sends it
            log.warning("event=task_send_failed job=%d attempt=%d error=%s action=%s", ticket.id, ticket.attempt,
                        logfmt_value(exc),
                        logfmt_value(f"sent again when its lease runs out ({self.queue.lease_seconds:g} s)"))

    def recover(self, journal: Journal) -> list[Job]:
        """At start-up: jobs the journal shows running may still be worked on remotely; each gets a fresh lease,
        so its result is taken if it comes, and it is sent again if not. None is re-queued here."""
        now = time.monotonic()
        for job_id, attempt in journal.running_attempts().items():
            job = journal.get(job_id)
            self.leases[job_id] = Lease(job_id, attempt, output_name(job.rel_path, job_id), job.sha256, now,
                                        now + self.queue.lease_seconds)
            log.info("event=job_adopted job=%d attempt=%d reason=%s", job_id, attempt,
                     logfmt_value("running when the coordinator stopped; waiting for its worker's result"))
        return []

    # ---- messages -----------------------------------------------------------------------------------------
    def collect(self, timeout: float) -> None:
        try:
            if time.monotonic() >= self.heartbeats_read_at + min(self.queue.heartbeat_seconds, 2.0):
                self._read_heartbeats()
            key = results_key(self.journal_id)
            first = self.client.blpop([key], timeout=max(timeout, 0.01))
            raw_results = [first[1]] if first else []
            while len(raw_results) < RESULTS_PER_TICK:
                more = self.client.lpop(key)
                if more is None:
                    break
                raw_results.append(more)
        except self._redis_errors as exc:
            if self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
                log.error("event=broker_unreachable error=%s action=%s", logfmt_value(exc),
                          logfmt_value("leases paused; results are collected when Redis is back"))
            time.sleep(timeout)
            return
        if self.broker_down_since is not None:
            # Workers could not report while Redis was away: every lease starts afresh, none expires for it.
            down = time.monotonic() - self.broker_down_since
            self.broker_down_since = None
            for lease in self.leases.values():
                lease.expires = time.monotonic() + self.queue.lease_seconds
            log.info("event=broker_reachable down_seconds=%.1f", down)
        for raw in raw_results:
            try:
                result = unseal_raw(raw, JobResult, self.secret)
            except MessageRejected as exc:
                log.error("event=result_rejected error=%s value=%s", logfmt_value(exc), logfmt_value(raw[:200]))
                continue
            self._take_result(result)
        self._expire_leases()

    def _read_heartbeats(self) -> None:
        self.heartbeats_read_at = time.monotonic()
        self.workers, rejected = live_workers(self.client, self.secret, self.queue.lease_seconds)
        for key in rejected.keys() - self.rejected_heartbeats:
            log.error("event=heartbeat_rejected key=%s error=%s action=%s", logfmt_value(key), logfmt_value(rejected[key]),
                      logfmt_value("ignored: renews no lease, adds no capacity"))
        self.rejected_heartbeats = set(rejected)
        self._read_progress()
        renewed = time.monotonic() + self.queue.lease_seconds
        for worker in self.workers:
            for held in worker.jobs:
                lease = self.leases.get(held.job_id)
                if held.journal_id == self.journal_id and lease is not None and lease.attempt == held.attempt:
                    lease.expires, lease.picked_up = renewed, True

    def _read_progress(self) -> None:
        """The newest progress report of each job, sealed like a result; one of no live lease (stale, forged,
        another coordinator's) is dropped from the hash, so it is read once, never acted on."""
        key = progress_key(self.journal_id)
        if self.client.hlen(key) > MAX_PROGRESS_FIELDS:
            # Far more than jobs can run at once: someone else writes here. Dropped whole; workers write again.
            log.error("event=progress_rejected error=%s", logfmt_value(f"more than {MAX_PROGRESS_FIELDS} reports; "
                                                                        "all dropped"))
            self.client.delete(key)
            return
        for field, raw in self.client.hgetall(key).items():
            try:
                progress = unseal_raw(raw, JobProgress, self.secret, MAX_PROGRESS_BYTES)
            except MessageRejected as exc:
                log.error("event=progress_rejected error=%s value=%s", logfmt_value(exc), logfmt_value(raw[:200]))
                self.client.hdel(key, field)
                continue
            lease = self.leases.get(progress.job_id)
            if progress.journal_id != self.journal_id or lease is None or lease.attempt != progress.attempt or \
                    str(progress.job_id).encode() != (field if isinstance(field, bytes) else str(field).encode()):
                self.client.hdel(key, field)
                continue
            self.report.on_progress(progress)

    def _forget_progress(self, job_id: int) -> None:
        try:
            self.client.hdel(progress_key(self.journal_id), str(job_id))
        except self._redis_errors:
            pass   # a leftover report names an attempt no lease holds: dropped at the next read

    def _take_result(self, result: JobResult) -> None:
        job_id, attempt = result.job_id, result.attempt
        lease = self.leases.get(job_id)
        live = self.live_attempt(job_id)
        if result.journal_id != self.journal_id or live != attempt or lease is None or lease.attempt != attempt:
            staging = self._stale_staging(result)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            log.warning("event=stale_result_discarded job=%d attempt=%d live_attempt=%s worker=%s", job_id, attempt,
                        live if live is not None else "-", logfmt_value(result.worker or "-"))
            return
        problem = self._not_this_attempts(result, lease)
        if problem is not None:
            # Left running: the lease expires unless a worker really holds this attempt, and the job is sent again.
            log.error("event=result_rejected job=%d attempt=%d worker=%s reason=%s", job_id, attempt,
                      logfmt_value(result.worker or "-"), logfmt_value(problem))
            return
        del self.leases[job_id]
        self._mark_live(job_id, 0)
        self._forget_progress(job_id)
        if result.outcome is Outcome.STAGED:
            staging = self.outbox / STAGING / lease.staging_name
            try:
                published = publish(staging, self.outbox, lease.name)
                result = result.model_copy(update={"outcome": Outcome.DONE, "output": str(published), "staging": None})
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                result = JobResult(job_id=job_id, attempt=attempt, journal_id=self.journal_id,
                                   outcome=Outcome.TRANSIENT_FAILURE, worker=result.worker,
                                   error=f"the worker's output could not be published ({exc}); check that "
                                         f"{self.outbox} is the same share on the workers (queue.path_map)")
        self.report.on_result(result)

    def _not_this_attempts(self, result: JobResult, lease: Lease) -> str | None:
        """Why a result for the live attempt names outputs that are not that attempt's, or None. A worker only
        stages, into OUTBOX/.staging/<lease name>.a<attempt>; `already_published` must name this job's folder
        directly in the outbox, found by its manifest's identity."""
        if result.outcome is Outcome.DONE:
            return "a remote worker never publishes; only staged results are taken"
        if result.outcome is Outcome.STAGED:
            expected = self.outbox / STAGING / lease.staging_name
            return None if result.staging == str(expected) else f"staging {result.staging!r} is not {str(expected)!r}"
        if result.outcome is Outcome.ALREADY_PUBLISHED:
            found = None if lease.sha256 is None else \
                find_published(self.outbox, lease.name, (self.journal_id, lease.job_id, lease.sha256))
            if found is None or result.output != str(found):
                return f"output {result.output!r} is not this job's published folder"
        return None

    def _stale_staging(self, result: JobResult) -> Path | None:
        """The staged folder of a stale result, only if it really is that attempt's (never rmtree what Redis says)."""
        if result.staging is None:
            return None
        path = Path(result.staging)
        match = STAGED_OUTPUT.search(path.name)
        if path.parent != self.outbox / STAGING or match is None or \
                (int(match.group(1)), int(match.group(2))) != (result.job_id, result.attempt):
            return None
        return path

    def _expire_leases(self) -> None:
        now = time.monotonic()
        for lease in [lease for lease in self.leases.values() if lease.expires < now]:
            del self.leases[lease.job_id]
            self._mark_live(lease.job_id, 0)
            if lease.picked_up:
                log.error("event=lease_expired job=%d attempt=%d reason=%s", lease.job_id, lease.attempt,
                          logfmt_value("its worker stopped sending heartbeats"))
                self.report.on_lost(lease.job_id, "the worker processing this input stopped reporting (no heartbeat "
                                    f"for {self.queue.lease_seconds:g} s: it died, e.g. out of memory or a crash in a "
                                    "decoder, or lost its network)", True, True)
            else:
                log.warning("event=lease_expired job=%d attempt=%d reason=%s", lease.job_id, lease.attempt,
                            logfmt_value("no worker took the task (the broker restarted or no worker is running)"))
                self.report.on_lost(lease.job_id, "no worker took the task within queue.lease_seconds (the broker "
                                    "restarted, or no worker was running); it is sent again", False, False)

    def check_timeouts(self, limit: float | None) -> None:
        """daemon.job_timeout: the attempt is given up on (a remote worker cannot be killed from here; its late
        result is discarded) and the job retried like a crash."""
        if not limit:
            return
        now = time.monotonic()
        for lease in [lease for lease in self.leases.values() if now - lease.dispatched > limit]:
            del self.leases[lease.job_id]
            self._mark_live(lease.job_id, 0)
            log.error("event=job_timeout job=%d attempt=%d limit=%.0fs", lease.job_id, lease.attempt, limit)
            self.report.on_lost(lease.job_id, f"timed out after {limit:g} s (daemon.job_timeout); a late result of "
                                "that attempt is discarded", False, True)

    def _mark_live(self, job_id: int, attempt: int) -> None:
        """Tell workers which attempt counts (0: none), so they skip a re-delivered stale task."""
        ttl = int(self.queue.visibility_timeout * 2 + self.queue.lease_seconds)
        try:
            self.client.set(live_key(self.journal_id, job_id), attempt, ex=ttl)
        except self._redis_errors:
            pass   # only an optimisation: a stale attempt's result is discarded here anyway

    def sweep_staging(self) -> None:
        """Remove staged folders of attempts that are no longer live (their worker died, or their result was
        discarded); the live attempts' folders may be being written right now and stay."""
        try:
            entries = list((self.outbox / STAGING).iterdir())
        except OSError:
            return
        for entry in entries:
            match = ATTEMPT_FOLDER.search(entry.name)
            if match and self.live_attempt(int(match.group(1))) != int(match.group(2)):
                shutil.rmtree(entry, ignore_errors=True)

    # ---- reload -------------------------------------------------------------------------------------------
    def try_pipeline(self, pipeline_json: str, stop_requested: Callable[[], bool]) -> None:
        log.warning("event=reload_ignored key=pipeline reason=%s",
                    logfmt_value("with queue.backend: celery each `facedeblur worker` reads the pipeline settings at its "
                      "start; restart the workers (one at a time) to apply them"))
        return None

    def reconfigure(self, pipeline_json: str, size: int, candidate: None) -> None:
        pass

    # ---- shutdown -----------------------------------------------------------------------------------------
    def busy(self) -> bool:
        """Remote jobs do not stop with the coordinator: they stay 'running' in the journal and are adopted
        (their results taken) at its next start, so shutdown never waits for them."""
        return False

    def abandon(self) -> list[int]:
        self.stopping = True
        return []
