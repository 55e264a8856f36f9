"""`facedeblur worker`: a Celery worker that takes jobs from the coordinator (`facedeblur watch` with
`queue.backend: celery`), processes them on shared storage, and reports back through Redis.

A worker never publishes and never touches the journal: it writes OUTBOX/.staging/NAME.a<attempt>, pushes the
staged path and the numbers onto the coordinator's result list, and the coordinator publishes it if that
attempt is still the live one (celery_pool.py). Killing a worker at any moment therefore loses at most the
attempt it was running; the coordinator's lease sends it again.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue as queue_module
import socket
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

from .messages import (MAX_HELD_INPUT, HeldJob, JobProgress, JobResult, JobTicket, MessageRejected, WorkerHeartbeat,
                       seal, unseal, worker_name)

log = logging.getLogger("facedeblur.worker")

RESULT_PUSH_PAUSE = 2.0   # seconds between tries to hand a result back while Redis is unreachable


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser(
        "worker", help="process the daemon's jobs on this machine (queue.backend: celery)",
        description="Run a Celery worker that takes jobs from the coordinator (`facedeblur watch` with "
                    "queue.backend: celery) through Redis; inputs and outputs are on shared storage. Needs "
                    "pip install 'facedeblur[queue]'. See docs/daemon.md, \"Several machines\".")
    worker.add_argument("--config", type=Path, metavar="FILE", required=True,
                        help="config.yaml with the queue: and pipeline: sections")
    worker.add_argument("--gpu", type=int, metavar="N", help="use only GPU N (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--concurrency", type=int, metavar="N", default=1,
                        help="jobs at once, each with its own models (default 1; 1 per GPU)")
    worker.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import FacedeblurError
    from .broker import connect, require_queue_extra
    from .logs import setup_daemon_logging
    require_queue_extra("facedeblur worker")
    if args.concurrency < 1:
        raise FacedeblurError("--concurrency must be 1 or more")
    config = load_config(args.config)
    if config.queue.backend != "celery":
        raise FacedeblurError(f"{args.config}: queue.backend is local; set queue.backend: celery and "
                              "queue.broker_url for `facedeblur worker`")
    if args.gpu is not None:
        # Before any model is loaded: onnxruntime's CUDA provider then sees only this GPU (as device 0).
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    setup_daemon_logging(verbose=logging.getLogger().level <= logging.DEBUG)
    client = connect(config.queue, "facedeblur worker")
    if not config.daemon.inbox or config.daemon.outbox is None:
        raise FacedeblurError(f"{args.config}: facedeblur worker needs daemon.inbox and daemon.outbox, the "
                              "coordinator's folders (as the coordinator sees them; queue.path_map maps them): a "
                              "task is only taken for an input inside them")
    runtime = WorkerRuntime(config, client, args.gpu, args.concurrency)
    runtime.load_models()
    return runtime.serve()


class WorkerRuntime:
    """One worker process: its model sets (one per concurrent job), its heartbeat, its Celery consumer."""

    def __init__(self, config, client, gpu: int | None, concurrency: int):
        from .broker import map_path, message_secret
        self.config = config
        self.queue = config.queue
        self.secret = message_secret(config.queue)
        # The only folders a task may read from and write into, as this machine sees them.
        self.inboxes = [map_path(str(i.absolute()), self.queue.path_map, to_worker=True) for i in config.daemon.inbox]
        self.outbox = map_path(str(config.daemon.outbox.absolute()), self.queue.path_map, to_worker=True)
        self.client = client
        self.gpu = gpu
        self.concurrency = concurrency
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = worker_name(self.host, self.pid)
        self.models: queue_module.Queue = queue_module.Queue()
        self.holding: dict[tuple[str, int, int], HeldJob] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def load_models(self) -> None:
        from ..errors import FacedeblurError
        from ..footage.process import load_models
        started = time.monotonic()
        for _ in range(self.concurrency):
            try:
                self.models.put(load_models(self.config.pipeline))
            except FacedeblurError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
                raise FacedeblurError(f"the models could not be loaded: {exc.__class__.__name__}: {exc}") from None
        log.info("event=worker_ready worker=%s gpu=%s concurrency=%d model_load_seconds=%.2f", self.name,
                 self.gpu if self.gpu is not None else "-", self.concurrency, time.monotonic() - started)

    # ---- heartbeat ----------------------------------------------------------------------------------------
    def heartbeat_key(self) -> str:
        from .broker import worker_key
        return worker_key(self.name)

    def beat(self) -> None:
        with self.lock:
            jobs = list(self.holding.values())
        beat = WorkerHeartbeat(host=self.host, pid=self.pid, gpu=self.gpu, concurrency=self.concurrency, jobs=jobs,
                               time=time.time())
        ttl = max(int(self.queue.heartbeat_seconds * 3), 2)
        try:
            self.client.set(self.heartbeat_key(), json.dumps(seal(beat, self.secret)), ex=ttl)
        except Exception as exc:  # noqa: BLE001 - Redis away: the next beat tries again
            log.debug("event=heartbeat_failed error=%s", exc)

    def _beat_forever(self) -> None:
        while not self.stopped.wait(self.queue.heartbeat_seconds):
            self.beat()

    # ---- jobs ---------------------------------------------------------------------------------------------
    def confine(self, ticket: JobTicket) -> JobTicket:
        """The ticket with this worker's own folders, if its input lies in one of its inboxes and its outbox is
        this worker's; MessageRejected otherwise. The ticket's name and relative path are single safe components
        (checked when it was opened), so nothing it names can lead outside those folders."""
        from .broker import map_path
        inbox = map_path(ticket.inbox, self.queue.path_map, to_worker=True)
        if inbox not in self.inboxes:
            raise MessageRejected(f"task for job {ticket.id}: its inbox {ticket.inbox!r} is not one of this worker's "
                                  "daemon.inbox folders")
        if map_path(ticket.outbox, self.queue.path_map, to_worker=True) != self.outbox:
            raise MessageRejected(f"task for job {ticket.id}: its outbox {ticket.outbox!r} is not this worker's "
                                  "daemon.outbox")
        return ticket.model_copy(update={
            "inbox": inbox, "path": str(PurePosixPath(inbox) / ticket.rel_path), "outbox": self.outbox,
            "follow_symlinks": ticket.follow_symlinks and self.config.daemon.follow_symlinks})

    def process(self, envelope: Any) -> None:
        from .broker import live_key, results_key
        from .logs import logfmt_value
        try:
            ticket = self.confine(unseal(envelope, JobTicket, self.secret))
        except MessageRejected as exc:
            log.error("event=task_rejected error=%s action=%s", logfmt_value(exc),
                      logfmt_value("dropped; nothing was read or written"))
            return
        job_id, attempt, journal_id = ticket.id, ticket.attempt, ticket.journal_id
        try:
            live = self.client.get(live_key(journal_id, job_id))
        except Exception:  # noqa: BLE001 - unknown: run it; the coordinator discards it if it is stale
            live = None
        if live is not None and int(live) != attempt:
            log.info("event=stale_task_skipped job=%d attempt=%d live_attempt=%s", job_id, attempt, int(live))
            return
        held = (journal_id, job_id, attempt)
        with self.lock:
            self.holding[held] = HeldJob(journal_id=journal_id, job_id=job_id, attempt=attempt,
                                         input=ticket.rel_path[:MAX_HELD_INPUT], started_at=time.time())
        self.beat()
        log.info("event=job_started job=%d attempt=%d input=%s", job_id, attempt, logfmt_value(ticket.rel_path))
        result = self._run(ticket)
        log.info("event=job_finished job=%d attempt=%d outcome=%s error=%s", job_id, attempt, result.outcome.value,
                 logfmt_value(result.error or "-"))
        self._hand_back(results_key(journal_id), result)
        self.beat()

    def _run(self, ticket: JobTicket) -> JobResult:
        """Run the job on a free model set; the result's paths as the coordinator sees them."""
        from .broker import map_path
        from .worker import run_job
        models = self.models.get()
        try:
            result = run_job(ticket, self.config.pipeline, models, publish_output=False, report=self._report)
        finally:
            self.models.put(models)
            with self.lock:
                self.holding.pop((ticket.journal_id, ticket.id, ticket.attempt), None)
        back = {key: map_path(value, self.queue.path_map, to_worker=False)
                for key, value in (("staging", result.staging), ("output", result.output)) if value}
        return result.model_copy(update={**back, "worker": self.name})

    def _report(self, progress: JobProgress) -> None:
        """The job's newest progress, sealed, into the coordinator's progress hash (one field per job)."""
        from .broker import progress_key
        try:
            self.client.hset(progress_key(progress.journal_id), str(progress.job_id),
                             json.dumps(seal(progress, self.secret)))
        except Exception as exc:  # noqa: BLE001 - Redis away: progress is only shown; the next report tries again
            log.debug("event=progress_not_sent job=%d error=%s", progress.job_id, exc)

    def _hand_back(self, key: str, result: JobResult) -> None:
        """Push the result, sealed; while Redis is away keep trying (the coordinator's leases wait for it too), up
        to the visibility timeout, after which the job has been sent again anyway."""
        deadline = time.monotonic() + self.queue.visibility_timeout
        sealed = json.dumps(seal(result, self.secret))
        while True:
            try:
                self.client.rpush(key, sealed)
                return
            except Exception as exc:  # noqa: BLE001 - redis errors: connection refused, timeouts, loading
                if time.monotonic() >= deadline:
                    log.error("event=result_lost job=%s error=%s", result.job_id, exc)
                    return
                log.warning("event=result_push_failed job=%s error=%s retry_in=%.0fs", result.job_id, exc,
                            RESULT_PUSH_PAUSE)
                time.sleep(RESULT_PUSH_PAUSE)

    # ---- Celery -------------------------------------------------------------------------------------------
    def serve(self) -> int:
        from .broker import TASK_NAME, TASK_QUEUE, make_celery_app
        app = make_celery_app(self.queue)

        def process_job(*args: Any, **kwargs: Any) -> None:
            # Whatever arrives is checked by process(): a task of another shape is rejected there, not by Celery.
            self.process(args[0] if len(args) == 1 and not kwargs else {"args": len(args), "kwargs": sorted(kwargs)})
        app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)(process_job)
        self.beat()
        threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()
        try:
            # threads: the models are loaded once in this process and shared out per job; kill -9 of this
            # process takes every job of it down at once, which the coordinator's leases are built for.
            app.worker_main(["worker", "--pool", "threads", "--concurrency", str(self.concurrency), "--queues",
                             TASK_QUEUE, "--hostname", f"facedeblur@{self.name}", "--without-gossip",
                             "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"])
        finally:
            self.stopped.set()
            try:
                self.client.delete(self.heartbeat_key())   # drained: leave the live list at once
            except Exception:  # noqa: BLE001 - the key's TTL removes it anyway
                pass
        return 0
