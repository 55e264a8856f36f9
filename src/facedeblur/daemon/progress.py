"""How far a running job is, and when it will be done: one home for the stages, the ETA formula and the
daemon's heartbeat file, read by `facedeblur status`, the Prometheus metrics and the review server alike.

A worker reports (stage, frames done, frames total) as it goes (messages.JobProgress); the daemon writes the
newest report into the job's journal row, so every reader sees the same figures, and a reader in another
process (status, the review server) needs nothing but the journal.

The heartbeat is STATE/daemon.heartbeat, JSON {pid, host, started_at, time, state}, rewritten (temp file,
rename) every HEARTBEAT_SECONDS by the daemon's loop and removed when it stops. A daemon is "running" only
when that file is fresh and its pid is alive on this host: a stopped daemon leaves no file, a killed one
leaves a file that goes stale and names a dead pid.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

# The stages a job goes through, in order, with the share of a job's time each takes. The shares come from
# the stage columns of docs/BENCHMARKS.md ("Footage pipeline"): pass 1 (decode, detect, track, align) and
# pass 2 (decode again, restore, paste, annotate, encode) take about half each; the gallery and manifest a
# few percent. "starting" is the moment before pass 1 (opening the input, checking it).
STAGE_SHARES = {"starting": 0.0, "detecting": 0.45, "restoring": 0.50, "gallery": 0.05}
STAGES = tuple(STAGE_SHARES)
STAGE_WORDS = {"starting": "starting", "detecting": "finding faces", "restoring": "restoring faces",
               "gallery": "writing the gallery"}
REPORT_EVERY_SECONDS = 1.0    # a worker's reports within one stage are at least this far apart
MIN_ETA_FRACTION = 0.02       # below this share of the job done, an ETA would be a guess: none is given

HEARTBEAT_FILE = "daemon.heartbeat"
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_STALE_SECONDS = 30.0   # a loop that blocked this long (a reload loading models) still beats; see service.py


def job_fraction(stage: str, done: int, total: int | None) -> float | None:
    """The share of the whole job done (0..1), or None when it cannot be told (a stage with no known total)."""
    if stage not in STAGE_SHARES:
        return None
    before = sum(STAGE_SHARES[s] for s in STAGES[:STAGES.index(stage)])
    if stage == "starting":
        return 0.0
    if not total:
        return before if before > 0 else None
    return before + STAGE_SHARES[stage] * min(done, total) / total


def job_progress(row: dict[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """A running journal row's progress: stage, frames done and total, percent, ETA seconds (None while too
    early to tell) and how old the report is; None when the worker has not reported yet."""
    stage = row.get("progress_stage")
    if row.get("state") != "running" or stage not in STAGE_SHARES:
        return None
    now = time.time() if now is None else now
    done, total = int(row.get("progress_done") or 0), row.get("progress_total")
    fraction = job_fraction(stage, done, total)
    started = row.get("started_at")
    eta = None
    if fraction is not None and fraction >= MIN_ETA_FRACTION and started:
        elapsed = max(now - started, 0.0)
        eta = round(elapsed * (1 - fraction) / fraction, 1)
    reported = row.get("progress_at")
    return {"stage": stage, "stage_words": STAGE_WORDS[stage], "frames_done": done, "frames_total": total,
            "percent": round(fraction * 100, 1) if fraction is not None else None, "eta_seconds": eta,
            "reported_seconds_ago": round(now - reported, 1) if reported else None}


def format_eta(seconds: float | None) -> str:
    """'ETA 1 min 5 s', or 'ETA unknown' (one wording for status and the pages)."""
    if seconds is None:
        return "ETA unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"ETA {seconds} s"
    if seconds < 3600:
        return f"ETA {seconds // 60} min {seconds % 60} s"
    return f"ETA {seconds // 3600} h {seconds % 3600 // 60} min"


def describe_progress(progress: dict[str, Any] | None) -> str:
    """'restoring faces 120/300 frames (72%), ETA 14 s', or 'waiting for the worker's first report'."""
    if progress is None:
        return "waiting for the worker's first report"
    frames = f" {progress['frames_done']}/{progress['frames_total']} frames" if progress["frames_total"] else \
        (f" {progress['frames_done']} frames" if progress["frames_done"] else "")
    percent = f" ({progress['percent']:g}%)" if progress["percent"] is not None else ""
    return f"{progress['stage_words']}{frames}{percent}, {format_eta(progress['eta_seconds'])}"


# ---- the daemon's heartbeat ------------------------------------------------------------------------------------
def write_heartbeat(state_dir: Path, started_at: float, state: str = "running") -> None:
    """Replace STATE/daemon.heartbeat atomically (a reader never sees half a file)."""
    beat = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started_at, "time": time.time(),
            "state": state}
    path = Path(state_dir) / HEARTBEAT_FILE
    temporary = path.with_name(f".{HEARTBEAT_FILE}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(beat), encoding="utf-8")
    os.replace(temporary, path)


def remove_heartbeat(state_dir: Path) -> None:
    try:
        (Path(state_dir) / HEARTBEAT_FILE).unlink()
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # alive, owned by another user (status run by a person, the daemon by its service user)
    return True


def daemon_liveness(state_dir: Path, now: float | None = None) -> dict[str, Any]:
    """{running, pid, host, heartbeat_age_seconds, state, reason}: whether a daemon is alive on this state folder."""
    now = time.time() if now is None else now
    path = Path(state_dir) / HEARTBEAT_FILE
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
        pid, beat_time = int(beat["pid"]), float(beat["time"])
        host, state = str(beat.get("host", "")), str(beat.get("state", "running"))
    except FileNotFoundError:
        return {"running": False, "pid": None, "host": None, "heartbeat_age_seconds": None, "state": None,
                "reason": "no heartbeat file: the daemon is stopped (or never ran with this state folder)"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"running": False, "pid": None, "host": None, "heartbeat_age_seconds": None, "state": None,
                "reason": f"the heartbeat file {path} cannot be read ({exc.__class__.__name__})"}
    age = round(now - beat_time, 1)
    result = {"pid": pid, "host": host, "heartbeat_age_seconds": age, "state": state}
    same_host = host == socket.gethostname()
    if same_host and not _pid_alive(pid):
        return {**result, "running": False, "reason": f"pid {pid} is not running (the daemon was killed)"}
    if age > HEARTBEAT_STALE_SECONDS:
        return {**result, "running": False,
                "reason": f"no heartbeat for {age:.0f} s (more than {HEARTBEAT_STALE_SECONDS:.0f} s): the daemon "
                          "is stopped, hung or on another machine that lost the state folder"}
    return {**result, "running": True, "reason": None}
