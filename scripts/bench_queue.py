#!/usr/bin/env python3
"""Throughput of `queue.backend: celery` with 1 remote worker against 2 (one onnxruntime thread each).

    .venv/bin/python scripts/bench_queue.py --clips 12 --frames 40

For each worker count: a fresh redis-server (loopback, random port, password, no persistence), a coordinator
(`facedeblur watch`) and that many `facedeblur worker --concurrency 1` processes, on this machine. The clips
(real H.264 with a face, from tests/daemon_support.make_clip) are renamed into the inbox at once; the
figure is jobs over the time from the first job started to the last one done, read from the journal. Writes
the "Scale-out through Celery" section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from benchmarks_doc import machine, write_section  # noqa: E402
from facedeblur.daemon.journal import jobs_so_far  # noqa: E402
from daemon_support import make_clip  # noqa: E402

PASSWORD = "bench-password"
HEADING = "## Scale-out through Celery (queue.backend: celery)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench_queue: timed out waiting for {what}")


def run_once(clips: list[Path], workers: int, root: Path) -> dict:
    import redis
    port = free_port()
    inbox, outbox, state = root / "inbox", root / "outbox", root / "state"
    for folder in (inbox, outbox, state):
        folder.mkdir(parents=True)
    (root / "password").write_text(PASSWORD, encoding="utf-8")
    (root / "queue-secret").write_bytes(os.urandom(32).hex().encode("ascii"))
    config = root / "config.yaml"
    config.write_text(
        f"pipeline:\n  threads: 1\n"
        f"daemon:\n  inbox: [{json.dumps(str(inbox))}]\n  outbox: {json.dumps(str(outbox))}\n"
        f"  state: {json.dumps(str(state))}\n  stable_seconds: 0.5\n  rescan_seconds: 2.0\n"
        f"queue:\n  backend: celery\n  broker_url: redis://127.0.0.1:{port}/0\n"
        f"  password_file: {json.dumps(str(root / 'password'))}\n  heartbeat_seconds: 1\n  lease_seconds: 60\n"
        f"  secret_file: {json.dumps(str(root / 'queue-secret'))}\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--requirepass", PASSWORD],
                                  stdout=subprocess.DEVNULL)]
    try:
        client = redis.Redis(port=port, password=PASSWORD)
        wait_until(lambda: _pings(client), 20, "redis-server")
        python = sys.executable
        with open(root / "coordinator.log", "ab") as log:
            processes.append(subprocess.Popen([python, "-m", "facedeblur", "watch", "--config", str(config)],
                                              stdout=log, stderr=subprocess.STDOUT, env=env))
        for index in range(workers):
            with open(root / f"worker{index}.log", "ab") as log:
                processes.append(subprocess.Popen([python, "-m", "facedeblur", "worker", "--config", str(config),
                                                   "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT,
                                                  env=env))
        wait_until(lambda: len(list(client.scan_iter(match="facedeblur:worker:*"))) == workers, 120,
                   f"{workers} live workers")
        for clip in clips:
            shutil.copy(clip, root / clip.name)
            os.rename(root / clip.name, inbox / clip.name)
        wait_until(lambda: sum(r["state"] == "done" for r in jobs_so_far(state)) == len(clips), 1800,
                   "every clip to be done")
        rows = jobs_so_far(state)
        first = min(r["started_at"] for r in rows)
        last = max(r["finished_at"] for r in rows)
        frames = sum(r["frames"] or 0 for r in rows)
        return dict(workers=workers, jobs=len(rows), frames=frames, seconds=last - first,
                    jobs_per_minute=len(rows) / (last - first) * 60, frames_per_second=frames / (last - first))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("bench_queue: needs redis-server (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as temp:
        temp_path = Path(temp)
        clips = [make_clip(temp_path / "clips" / f"cam{i:02d}.mp4", frames=args.frames, seed=i)
                 for i in range(args.clips)]
        results = [run_once(clips, workers, temp_path / f"run{workers}") for workers in (1, 2)]
    base = results[0]["jobs_per_minute"]
    lines = [HEADING, "",
             f"`python scripts/bench_queue.py --clips {args.clips} --frames {args.frames}`: {args.clips} clips of "
             f"{args.frames} frames (160x120, one face) through a coordinator and N `facedeblur worker "
             "--concurrency 1` processes with `pipeline.threads: 1`, Redis on loopback, all on this machine "
             f"({machine()}, CPU only). Time from the first job started to the "
             "last one done, from the journal.", "",
             "| workers | jobs | frames | seconds | jobs/min | frames/s | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['workers']} | {r['jobs']} | {r['frames']} | {r['seconds']:.1f} | "
                     f"{r['jobs_per_minute']:.1f} | {r['frames_per_second']:.1f} | "
                     f"{r['jobs_per_minute'] / base:.2f}x |")
    speedup = results[1]["jobs_per_minute"] / base
    lines += ["", f"Each worker is one process with its own models. A second worker gives {speedup:.2f}x the "
              "throughput of one here, with the coordinator (intake, journal, publishing) and Redis sharing the "
              "same cores. Not measured here: workers on separate machines and GPUs, where the shared storage's "
              "bandwidth also counts."]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_doc:
        write_section(HEADING, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
