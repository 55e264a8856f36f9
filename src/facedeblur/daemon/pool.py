"""What the daemon's loop needs from a worker pool: LocalWorkerPool (local_workers.py, `queue.backend: local`)
and CeleryWorkerPool (celery_pool.py, `queue.backend: celery`) both provide it, so the loop never asks which
one it drives.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .messages import JobProgress, JobResult, JobTicket

if TYPE_CHECKING:
    from ..config import Config
    from .journal import Job, Journal
    from .metrics import DaemonMetrics


class Slot(Protocol):
    """Capacity for one job: a local worker process, or a free thread of some remote worker."""
    index: int

    @property
    def pid(self) -> int: ...


@dataclass(frozen=True)
class PoolCallbacks:
    """How a pool reports back to the daemon.

    on_result(result): a run finished (a staged remote output is already published when this is called);
    on_lost(job_id, error, worker_died, input_fault): a run ended without a result (its worker died, timed
    out, or the task never reached a worker: then input_fault is false and no attempt is counted);
    on_first_ready(): the pool can take jobs for the first time; keep_alive(): feed the watchdog while waiting;
    on_progress(progress): a validated progress report of a job this pool holds, for the attempt it holds."""
    on_result: Callable[[JobResult], None]
    on_lost: Callable[[int, str, bool, bool], None]
    on_first_ready: Callable[[], None]
    keep_alive: Callable[[], None]
    on_progress: Callable[[JobProgress], None] = lambda progress: None


class WorkerPool(Protocol):
    stopping: bool

    # start-up and housekeeping
    def recover(self, journal: Journal) -> list[Job]:
        """Jobs the journal shows running at start-up: the ones re-queued (the local pool's workers died with
        the daemon); a remote pool adopts them instead, since its workers may still be on them."""
    def sweep_staging(self) -> None:
        """Remove OUTBOX/.staging leftovers that no running attempt can still be writing."""
    def fill(self) -> None: ...
    def respawn_if_due(self) -> None: ...

    # dispatch
    def idle(self) -> list[Slot]: ...
    def held_jobs(self) -> set[int]: ...
    def stalled(self) -> bool: ...
    def start_job(self, slot: Slot, ticket: JobTicket) -> None: ...
    def collect(self, timeout: float) -> None: ...
    def check_timeouts(self, limit: float | None) -> None: ...

    # reload
    def try_pipeline(self, pipeline_json: str, stop_requested: Callable[[], bool]) -> object | str | None: ...
    def reconfigure(self, pipeline_json: str, size: int, candidate: object | None) -> None: ...

    # shutdown
    def busy(self) -> bool: ...
    def abandon(self) -> list[int]: ...


def make_worker_pool(config: Config, outbox: Path, journal: Journal, metrics: DaemonMetrics,
                     callbacks: PoolCallbacks) -> WorkerPool:
    if config.queue.backend == "celery":
        from .celery_pool import CeleryWorkerPool   # needs the queue extra
        return CeleryWorkerPool(config.queue, outbox, journal.journal_id, journal.live_attempt, metrics, callbacks)
    from .local_workers import LocalWorkerPool
    return LocalWorkerPool(config.pipeline.model_dump_json(), config.daemon.workers, outbox, metrics, callbacks)
