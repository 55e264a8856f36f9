"""What the coordinator (`facedeblur watch` with `queue.backend: celery`) and the remote workers (`facedeblur
worker`) share: the Redis connection and its password, the Celery app, the Redis key names, path mapping.

Redis carries three things besides Celery's own task queue:
  * LIVE_KEY (job, attempt): the attempt the coordinator is waiting for, so a worker can skip a task that was
    re-delivered after the job was already sent again (a skipped or stale task is harmless either way: only
    the coordinator publishes, and only the live attempt);
  * RESULTS_KEY: a list the workers push their results onto and the coordinator pops;
  * PROGRESS_KEY: a hash, job id -> the newest sealed progress report of that job (messages.JobProgress), which
    the coordinator reads with the heartbeats; a hash keeps only the latest report, so it cannot grow;
  * WORKER_KEY_PREFIX + host:pid: each worker's sealed heartbeat (messages.WorkerHeartbeat: host, pid, GPU,
    current jobs, time), with a TTL, so a worker that vanishes drops out of `facedeblur status` and its jobs'
    leases stop being renewed.
celery and redis are imported inside functions: without `queue.backend: celery` neither is needed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..config import PathMapping, QueueSettings
from ..errors import FacedeblurError, NotYetAvailableError

if TYPE_CHECKING:
    from .messages import WorkerHeartbeat

TASK_NAME = "facedeblur.process_job"
MAX_WORKERS = 1024                 # worker keys read per heartbeat check; more is not a real cluster
MAX_HEARTBEAT_BYTES = 256 * 1024   # a real heartbeat is well under this even with MAX_HELD_JOBS jobs
TASK_QUEUE = "facedeblur"
WORKER_KEY_PREFIX = "facedeblur:worker:"
CONNECT_TIMEOUT = 5.0


def results_key(journal_id: str) -> str:
    return f"facedeblur:results:{journal_id}"


def progress_key(journal_id: str) -> str:
    return f"facedeblur:progress:{journal_id}"


def worker_key(name: str) -> str:
    """The Redis key of the heartbeat of the worker `name` (WorkerHeartbeat.name, host:pid)."""
    return f"{WORKER_KEY_PREFIX}{name}"


def live_key(journal_id: str, job_id: int) -> str:
    return f"facedeblur:live:{journal_id}:{job_id}"


def require_queue_extra(command: str) -> None:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        raise FacedeblurError(f"{command} with queue.backend: celery needs the queue extra; install it with "
                              "pip install 'facedeblur[queue]'") from None


def broker_password(queue: QueueSettings) -> str | None:
    if queue.password_file is not None:
        try:
            return queue.password_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise FacedeblurError(f"queue.password_file {queue.password_file} cannot be read "
                                  f"({exc.strerror or exc}); fix its path or permissions") from None
    if queue.password_env is not None:
        value = os.environ.get(queue.password_env)
        if not value:
            raise FacedeblurError(f"queue.password_env names {queue.password_env}, which is not set; set it "
                                  "(systemd: EnvironmentFile=) or use queue.password_file")
        return value
    return None


def message_secret(queue: QueueSettings) -> bytes:
    """The key that seals tasks and results (messages.seal); the same on the coordinator and every worker."""
    from .messages import MIN_SECRET_BYTES
    if queue.secret_file is not None:
        try:
            secret = queue.secret_file.read_bytes().strip()
        except OSError as exc:
            raise FacedeblurError(f"queue.secret_file {queue.secret_file} cannot be read ({exc.strerror or exc}); "
                                  "fix its path or permissions") from None
        where = f"queue.secret_file {queue.secret_file}"
    elif queue.secret_env is not None:
        secret = os.environ.get(queue.secret_env, "").strip().encode("utf-8")
        where = f"queue.secret_env {queue.secret_env}"
    else:
        raise FacedeblurError("queue.backend: celery needs queue.secret_file (or secret_env): a key that signs every "
                              "task and result, the same on the coordinator and the workers; make one with "
                              "head -c 32 /dev/urandom | base64 > /etc/facedeblur/queue-secret")
    if len(secret) < MIN_SECRET_BYTES:
        raise FacedeblurError(f"{where}: the signing key is {len(secret)} bytes, at least {MIN_SECRET_BYTES} are "
                              "needed; make one with head -c 32 /dev/urandom | base64")
    return secret


def authenticated_url(queue: QueueSettings) -> str:
    """broker_url with the password put in; never logged or shown."""
    url = urlsplit(queue.broker_url or "")
    password = broker_password(queue)
    if not password:
        return url.geturl()
    from urllib.parse import quote
    netloc = f":{quote(password, safe='')}@{url.netloc}"
    return urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment))


def connect(queue: QueueSettings, who: str):
    """A checked Redis client: a wrong password or an unreachable broker is one line naming the fix."""
    import redis
    client = redis.Redis.from_url(authenticated_url(queue), socket_timeout=CONNECT_TIMEOUT,
                                  socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=30)
    try:
        client.ping()
    except redis.AuthenticationError:
        source = f"queue.password_file {queue.password_file}" if queue.password_file else \
            f"queue.password_env {queue.password_env}" if queue.password_env else "no password set"
        raise FacedeblurError(f"{who}: the broker {queue.broker_url} refused the password ({source}); put Redis's "
                              "requirepass in queue.password_file or queue.password_env") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise FacedeblurError(f"{who}: the broker {queue.broker_url} needs a password; set "
                                  "queue.password_file or queue.password_env") from None
        raise FacedeblurError(f"{who}: the broker {queue.broker_url} answered {exc}; check broker_url") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        # Often Redis still starting or the network not up yet: exit 75, which systemd restarts.
        raise NotYetAvailableError(f"{who}: cannot reach the broker {queue.broker_url} ({exc}); start Redis or "
                                   "fix queue.broker_url (exit status 75: systemd starts it again)") from None
    return client


def make_celery_app(queue: QueueSettings):
    from celery import Celery
    app = Celery("facedeblur", broker=authenticated_url(queue))
    app.conf.update(
        task_default_queue=TASK_QUEUE,
        # Exactly-once is the coordinator's (it publishes only the live attempt); Celery's part is not to
        # drop a task: acknowledge after the run, give it back when the worker dies, take one at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,          # results travel on RESULTS_KEY, read by the coordinator only
        broker_transport_options={"visibility_timeout": queue.visibility_timeout},
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,   # a broker restart is waited out, not fatal
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json", accept_content=["json"],
    )
    return app


def map_path(path: str, path_map: list[PathMapping], to_worker: bool) -> str:
    """A path on the coordinator as the worker sees it (or back): the longest matching prefix is replaced."""
    pairs = [(m.coordinator, m.worker) if to_worker else (m.worker, m.coordinator) for m in path_map]
    for source, target in sorted(pairs, key=lambda pair: len(str(pair[0])), reverse=True):
        try:
            rest = Path(path).relative_to(source)
        except ValueError:
            continue
        return str(target / rest) if str(rest) != "." else str(target)
    return path


def live_workers(client, secret: bytes, max_age: float) -> tuple[list[WorkerHeartbeat], dict[str, str]]:
    """Every worker whose heartbeat key has not expired, sorted by host and pid: only heartbeats sealed with the
    queue secret, under their own worker's key and no more than `max_age` seconds from now (a sealed copy
    replayed later, or a worker whose clock is that far off); and key -> why for each key refused. Past
    MAX_WORKERS keys the rest are not read (refused once, under the key '*')."""
    from .messages import MessageRejected, WorkerHeartbeat, unseal_raw
    workers, rejected = [], {}
    now = time.time()
    for count, key in enumerate(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=100)):
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if count >= MAX_WORKERS:
            rejected["*"] = f"more than {MAX_WORKERS} worker keys; the rest are not read"
            break
        raw = client.get(key)
        if not raw:
            continue
        try:
            beat = unseal_raw(raw, WorkerHeartbeat, secret, MAX_HEARTBEAT_BYTES)
            if name != worker_key(beat.name):
                raise MessageRejected(f"heartbeat of {beat.name} under another worker's key")
            if abs(now - beat.time) > max_age:
                raise MessageRejected(f"heartbeat of {beat.name} sent {now - beat.time:+.0f} s from now (replayed, or "
                                      "the clocks differ by more than queue.lease_seconds: run NTP)")
        except MessageRejected as exc:
            rejected[name] = str(exc)
            continue
        workers.append(beat)
    return sorted(workers, key=lambda worker: (worker.host, worker.pid)), rejected
