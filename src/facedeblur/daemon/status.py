"""`facedeblur status`: what the daemon is doing, read from its journal (works while it runs, or after)."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import FacedeblurError
from ..safe_text import display_name
from .journal import JOURNAL_FILE, JournalReader, damaged_message, inbox_name, is_damaged, shown_error
from .progress import daemon_liveness, describe_progress, job_progress


def collect_status(state_dir: Path, recent: int = 10) -> dict[str, Any]:
    if not (state_dir / JOURNAL_FILE).is_file():
        raise FacedeblurError(f"no journal in {state_dir}; pass the --state folder the daemon uses "
                              "(or --config with daemon.state)")
    journal = JournalReader(state_dir)
    try:
        return _collect(journal, state_dir, recent)
    except sqlite3.DatabaseError as exc:
        if is_damaged(exc):
            raise FacedeblurError(damaged_message(journal.path, exc)) from None
        raise FacedeblurError(f"the job journal {journal.path} cannot be read ({exc}); check the state folder "
                              "and its disk") from None
    finally:
        journal.close()


def _collect(journal: JournalReader, state_dir: Path, recent: int) -> dict[str, Any]:
    now = time.time()
    counts = journal.counts()
    running = [dict(id=r["id"], input=inbox_name(r["inbox"], r["rel_path"]), attempt=r["attempts"],
                    worker_pid=r["worker_pid"],
                    running_seconds=round(now - r["started_at"], 1) if r["started_at"] else None,
                    progress=job_progress(r, now))
               for r in journal.running()]
    failures = [dict(id=r["id"], input=inbox_name(r["inbox"], r["rel_path"]), attempts=r["attempts"],
                     error=shown_error(r["error"], r["inbox"], r["rel_path"]),
                     failed_copy=display_name(r["failed_copy"]) if r["failed_copy"] else None, at=r["finished_at"])
                for r in journal.recent_failures(recent)]
    throughput = {}
    for label, window in (("last_hour", 3600), ("last_day", 86400)):
        done = journal.done_since(now - window)
        busy = done["seconds"]
        throughput[label] = dict(jobs=done["jobs"], frames=done["frames"], faces=done["faces"],
                                 processing_seconds=round(busy, 1),
                                 frames_per_second=round(done["frames"] / busy, 2) if busy else None)
    return dict(state_dir=str(state_dir), daemon=daemon_liveness(state_dir, now), counts=counts,
                total=sum(counts.values()),
                retrying=journal.retrying_count(), running_jobs=running, recent_failures=failures,
                throughput=throughput, last_done_at=journal.last_done_at())


def format_status(status: dict[str, Any]) -> str:
    c = status["counts"]
    daemon = status["daemon"]
    if daemon["running"]:
        alive = f"daemon: {daemon['state']} (pid {daemon['pid']}, heartbeat {daemon['heartbeat_age_seconds']} s ago)"
    else:
        alive = f"daemon: not running ({daemon['reason']})"
    lines = [alive, f"journal: {status['state_dir']}",
             f"queued {c['queued']} (retrying {status['retrying']}), running {c['running']}, done {c['done']}, "
             f"failed {c['failed']}, duplicates skipped {c['duplicate']}, superseded by a newer version "
             f"{c['superseded']}"]
    if status["running_jobs"] and not daemon["running"]:
        lines.append("  (the journal shows jobs running, but the daemon is not: they are re-queued when it starts)")
    for job in status["running_jobs"]:
        lines.append(f"  running: job {job['id']} {job['input']!r} attempt {job['attempt']}, "
                     f"{job['running_seconds']} s: {describe_progress(job['progress'])}")
    for label, t in status["throughput"].items():
        fps = f", {t['frames_per_second']} frames/s while busy" if t["frames_per_second"] else ""
        lines.append(f"{label.replace('_', ' ')}: {t['jobs']} jobs, {t['frames']} frames, {t['faces']} faces{fps}")
    if "workers" in status:
        if status["workers"] is None:
            lines.append(f"workers: unknown ({status['workers_error']})")
        else:
            lines.append(f"workers: {len(status['workers'])} live")
            for w in status["workers"]:
                jobs = ", ".join(f"job {j['id']} attempt {j['attempt']}" for j in w["jobs"]) or "idle"
                lines.append(f"  {w['host']} pid {w['pid']} gpu {w['gpu'] if w['gpu'] is not None else '-'}: "
                             f"{jobs}; heartbeat {w['seconds_since_heartbeat']} s ago")
            for refused in status.get("rejected_heartbeats", []):
                lines.append(f"  refused heartbeat {refused}")
    if status["recent_failures"]:
        lines.append("recent failures:")
        for job in status["recent_failures"]:
            lines.append(f"  job {job['id']} {job['input']!r}: {job['error']}")
    return "\n".join(lines)


def remote_workers(queue) -> dict[str, Any]:
    """The workers whose heartbeat is live in Redis (queue.backend: celery), or why they cannot be listed."""
    from .broker import connect, live_workers, message_secret, require_queue_extra
    try:
        require_queue_extra("facedeblur status")
        client = connect(queue, "facedeblur status")
        now = time.time()
        live, rejected = live_workers(client, message_secret(queue), queue.lease_seconds)
        workers = [dict(host=w.host, pid=w.pid, gpu=w.gpu, concurrency=w.concurrency,
                        jobs=[dict(id=j.job_id, attempt=j.attempt, input=display_name(j.input)) for j in w.jobs],
                        last_heartbeat=w.time, seconds_since_heartbeat=round(now - w.time, 1))
                   for w in live]
        report: dict[str, Any] = {"workers": workers}
        if rejected:
            report["rejected_heartbeats"] = [f"{display_name(key)}: {display_name(why)}" for key, why in rejected.items()]
        return report
    except FacedeblurError as exc:
        return {"workers": None, "workers_error": str(exc)}


def print_status(state_dir: Path, as_json: bool, queue=None) -> None:
    status = collect_status(state_dir)
    if queue is not None:
        status.update(remote_workers(queue))
    print(json.dumps(status, ensure_ascii=False) if as_json else format_status(status))
