"""The messages between the daemon's parts: a job ticket (daemon -> worker), a job result and progress report
(worker -> daemon), and a remote worker's heartbeat (worker -> daemon).

Local workers get them over a pipe as Python objects. Remote workers (queue.backend: celery) get them through
Redis, sealed: the canonical JSON of the message plus an HMAC-SHA256 over it, keyed with the queue secret
(queue.secret_file / queue.secret_env). A message is opened only if its HMAC matches and every field is
present, known and of its type; anything else is a `MessageRejected` with one line saying why.

Why an HMAC and not Celery's own message signing: Celery's `auth` serializer signs tasks only (our results
travel on a plain Redis list, outside Celery), and needs an X.509 key pair and certificate store on every
machine; one shared secret covers tasks and results alike with the standard library's `hmac`.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator,
                      model_validator)

from .journal import Job
from .progress import STAGES

# output_name()'s shape: a readable name that does not start with a dot, ending in the job id.
_OUTPUT_NAME = re.compile(r"[^\W.][\w.\-]*-j(\d+)", re.UNICODE)
MIN_SECRET_BYTES = 16


class MessageRejected(ValueError):
    """A message that is not what a worker or the daemon sent: unsigned, badly signed, or malformed."""


class Outcome(str, enum.Enum):
    DONE = "done"                                   # published (by the local worker, or by the coordinator)
    STAGED = "staged"                               # a remote worker staged it; the coordinator publishes
    ALREADY_PUBLISHED = "already_published"         # this job's folder was already in the outbox
    CHANGED = "changed"                             # the input changed while it was processed
    VANISHED = "vanished"                           # the input was gone before it was processed
    INPUT_FAULT = "input_fault"                     # failed because of the input: retried, counted
    INPUT_FAULT_PERMANENT = "input_fault_permanent"  # can never succeed as it is: failed at once
    TRANSIENT_FAILURE = "transient_failure"         # the machine's fault (disk full): retried, not counted


SUCCESS = (Outcome.DONE, Outcome.STAGED, Outcome.ALREADY_PUBLISHED)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def safe_relative_path(text: str) -> str:
    """A relative path of ordinary components (no '', '.', '..', no leading '/', no NUL)."""
    parts = text.split("/")
    if not text or "\0" in text or any(part in ("", ".", "..") for part in parts):
        raise ValueError("must be a relative path without '.', '..' or empty components")
    return text


class JobTicket(_Message):
    """One run of one job, as the daemon hands it to a worker."""
    id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    journal_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    path: str
    inbox: str
    rel_path: str
    kind: Literal["file", "frames"]
    size: int = Field(ge=0)
    mtime_ns: int
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None
    outbox: str
    name: str
    follow_symlinks: bool = False

    @field_validator("rel_path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return safe_relative_path(value)

    @field_validator("path", "inbox", "outbox")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\0" in value:
            raise ValueError("must be an absolute path")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "JobTicket":
        match = _OUTPUT_NAME.fullmatch(self.name)
        if match is None or int(match.group(1)) != self.id or len(self.name.encode("utf-8", "surrogateescape")) > 200:
            raise ValueError(f"name must be one output folder name ending in -j{self.id}, not {self.name!r}")
        if str(PurePosixPath(self.inbox) / self.rel_path) != self.path:
            raise ValueError("path must be inbox/rel_path")
        return self

    @classmethod
    def for_job(cls, job: Job, attempt: int, outbox: str, name: str, journal_id: str,
                follow_symlinks: bool) -> "JobTicket":
        return cls(id=job.id, attempt=attempt, journal_id=journal_id, path=job.path, inbox=job.inbox,
                   rel_path=job.rel_path, kind=job.kind, size=job.size, mtime_ns=job.mtime_ns, sha256=job.sha256,
                   outbox=outbox, name=name, follow_symlinks=follow_symlinks)

    @property
    def staging_name(self) -> str:
        """A remote attempt's folder in OUTBOX/.staging: one per attempt, so two attempts never share one."""
        return f"{self.name}.a{self.attempt}"


class JobResult(_Message):
    """What became of one run of one job."""
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    journal_id: str
    outcome: Outcome = Field(strict=False)   # arrives as its string value from JSON
    output: str | None = None        # the published folder (done, already_published)
    staging: str | None = None       # the staged folder (staged)
    error: str | None = None
    seconds: float | None = None
    frames: int | None = None
    faces: int | None = None
    tracks: int | None = None
    worker: str | None = None        # host:pid of a remote worker

    @model_validator(mode="after")
    def _fields_of_its_outcome(self) -> "JobResult":
        if self.outcome in (Outcome.DONE, Outcome.ALREADY_PUBLISHED) and not self.output:
            raise ValueError(f"outcome {self.outcome.value} needs output")
        if self.outcome is Outcome.STAGED and not self.staging:
            raise ValueError("outcome staged needs staging")
        if self.outcome not in SUCCESS and not self.error:
            raise ValueError(f"outcome {self.outcome.value} needs error")
        return self

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESS

    @property
    def input_fault(self) -> bool:
        return self.outcome in (Outcome.INPUT_FAULT, Outcome.INPUT_FAULT_PERMANENT, Outcome.VANISHED)


MAX_FRAMES = 10 ** 9   # far beyond any clip; a larger count is a forged or broken message


class JobProgress(_Message):
    """How far one run of one job is (worker -> daemon, while it runs). Only ever shown, never acted on: the
    daemon takes it only for the attempt that is running, so a stale or forged report changes no state."""
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    journal_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    stage: Literal[STAGES]   # type: ignore[valid-type] - the tuple of stage names, in order
    frames_done: int = Field(ge=0, le=MAX_FRAMES)
    frames_total: int | None = Field(default=None, ge=0, le=MAX_FRAMES)

    @model_validator(mode="after")
    def _done_within_total(self) -> "JobProgress":
        if self.frames_total is not None and self.frames_done > self.frames_total:
            raise ValueError(f"frames_done {self.frames_done} is more than frames_total {self.frames_total}")
        return self


MAX_HELD_JOBS = 256          # jobs one worker may report at once; far beyond any worker's concurrency
MAX_WORKER_CONCURRENCY = 256
MAX_HELD_INPUT = 4096


class HeldJob(_Message):
    """One job attempt a remote worker is running, as its heartbeat names it."""
    journal_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=0)
    input: str = Field(max_length=MAX_HELD_INPUT)   # shown by `facedeblur status`; a longer one is cut
    started_at: float


class WorkerHeartbeat(_Message):
    """A remote worker's report of itself and the jobs it holds (worker -> daemon, every heartbeat_seconds).

    It renews the leases of the jobs it names and its concurrency is how many tasks the daemon sends, so it is
    sealed like a result: unsealed, anyone reaching the broker could hold a job forever or have every job sent
    at once. `time` is sealed too, so a copy replayed later than a lease is refused (broker.live_workers)."""
    host: str = Field(min_length=1, max_length=255)
    pid: int = Field(ge=1)
    gpu: int | None = None
    concurrency: int = Field(ge=1, le=MAX_WORKER_CONCURRENCY)
    jobs: list[HeldJob] = Field(max_length=MAX_HELD_JOBS)
    time: float

    @property
    def name(self) -> str:
        return worker_name(self.host, self.pid)


def worker_name(host: str, pid: int) -> str:
    """How a remote worker is named in logs, results and its heartbeat key."""
    return f"{host}:{pid}"


# ---- sealing for the way through Redis ----------------------------------------------------------------------
_PURPOSE = {JobTicket: b"facedeblur job ticket v1\n", JobResult: b"facedeblur job result v1\n",
            JobProgress: b"facedeblur job progress v1\n", WorkerHeartbeat: b"facedeblur worker heartbeat v1\n"}
M = TypeVar("M", JobTicket, JobResult, JobProgress, WorkerHeartbeat)


def canonical_json(message: _Message) -> str:
    """Sorted keys, no spaces, ASCII only (a file name that is not UTF-8 travels as its \\udcXX escapes)."""
    return json.dumps(message.model_dump(mode="json"), ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _mac(secret: bytes, kind: type, body: str) -> str:
    # The purpose is part of what is signed: a signed ticket can never pass as a result, nor the reverse.
    return hmac.new(secret, _PURPOSE[kind] + body.encode("ascii"), hashlib.sha256).hexdigest()


def seal(message: JobTicket | JobResult | JobProgress | WorkerHeartbeat, secret: bytes) -> dict[str, str]:
    body = canonical_json(message)
    return {"body": body, "hmac": _mac(secret, type(message), body)}


_WHAT = {JobTicket: "task", JobResult: "result", JobProgress: "progress report",
         WorkerHeartbeat: "heartbeat"}


def unseal(envelope: Any, kind: type[M], secret: bytes) -> M:
    """The message inside `envelope` if it is sealed with `secret` and valid, else MessageRejected."""
    what = _WHAT[kind]
    if not isinstance(envelope, dict) or set(envelope) != {"body", "hmac"}:
        raise MessageRejected(f"unsigned {what}: expected {{body, hmac}}, got "
                              f"{sorted(envelope) if isinstance(envelope, dict) else type(envelope).__name__}")
    body, mac = envelope["body"], envelope["hmac"]
    if not isinstance(body, str) or not isinstance(mac, str) or not body.isascii():
        raise MessageRejected(f"malformed {what}: body and hmac must be ASCII strings")
    if not hmac.compare_digest(mac, _mac(secret, kind, body)):
        raise MessageRejected(f"badly signed {what}: its HMAC does not match queue.secret (another secret, or forged)")
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return kind.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in exc.errors()[:5])
        raise MessageRejected(f"invalid {what}: {problems}") from None
    except ValueError as exc:
        raise MessageRejected(f"invalid {what}: {exc}") from None


def unseal_raw(raw: str | bytes, kind: type[M], secret: bytes, max_bytes: int | None = None) -> M:
    """The message in `raw`, the JSON text of a sealed envelope as read from Redis, if it is no longer than
    `max_bytes`, JSON, sealed with `secret` and valid; else MessageRejected."""
    what = _WHAT[kind]
    if max_bytes is not None and len(raw) > max_bytes:
        raise MessageRejected(f"{what} of {len(raw)} bytes (a real one is under {max_bytes})")
    try:
        envelope = json.loads(raw)
    except ValueError:
        raise MessageRejected(f"unreadable {what}: not JSON") from None
    return unseal(envelope, kind, secret)
