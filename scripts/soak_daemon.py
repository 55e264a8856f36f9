#!/usr/bin/env python3
"""Soak test for `facedeblur watch`: drop hundreds of tiny clips while killing and restarting the daemon.

    .venv/bin/python scripts/soak_daemon.py --clips 300 --minutes 10

Drops clips into an inbox (at once, renamed from .part, written slowly, in subfolders, some invalid,
some duplicates) while a chaos loop kills the daemon with SIGKILL (mostly) or SIGTERM at random and
restarts it. When everything is dropped it lets the daemon finish, then checks the journal and the
outbox: every valid input done exactly once with one published folder whose manifest names it and
its sha256; every invalid input failed with a reason; every duplicate recognised; no orphan or
half-written output; journal integrity ok. Prints a summary (and --report writes it as JSON).
Exit status 0 only if every check held.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from facedeblur.daemon.journal import JournalReader, jobs_so_far

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seed: int, frames: int = 6, width: int = 96, height: int = 72) -> None:
    import av
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Chaos:
    def __init__(self, root: Path, python: str, kill_every: tuple[float, float], rng: random.Random):
        self.root, self.python, self.kill_every, self.rng = root, python, kill_every, rng
        self.process: subprocess.Popen | None = None
        self.kills = self.terms = self.starts = 0
        self.bad_exits: list[int] = []
        self.log = open(root / "daemon.log", "ab")

    def start(self) -> None:
        self.process = subprocess.Popen([self.python, "-m", "facedeblur", "watch", "--config",
                                         str(self.root / "daemon.yaml")], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=self.root)
        self.starts += 1

    def interrupt(self) -> None:
        assert self.process is not None
        if self.rng.random() < 0.8:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1
        else:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait()
            self.terms += 1
            if code != 0:
                self.bad_exits.append(code)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout=120)
            if code != 0:
                self.bad_exits.append(code)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300, help="valid clips to drop")
    parser.add_argument("--invalid", type=int, default=10, help="invalid inputs (corrupt, empty, truncated, text)")
    parser.add_argument("--duplicates", type=int, default=10, help="copies of already-dropped clips")
    parser.add_argument("--minutes", type=float, default=10.0, help="hard bound on the whole run")
    parser.add_argument("--burst", type=int, default=200, help="this many inputs appear at once, at the start")
    parser.add_argument("--drop-seconds", type=float, default=120.0, help="spread the other drops over this long")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(8.0, 25.0), metavar=("MIN", "MAX"),
                        help="seconds between random kills/restarts")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="default: a new temp folder (removed unless --keep)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--report", type=Path, help="write the summary as JSON here")
    return parser.parse_args()


class Plan:
    """Every input, prepared in the pool first so drops are quick renames/copies."""

    def __init__(self, args: argparse.Namespace, rng: random.Random, pool: Path):
        print(f"soak: preparing {args.clips} clips in {pool}", flush=True)
        self.valid: dict[str, str] = {}       # rel path -> sha256
        self.drops: list[tuple[str, Path, str]] = []    # (how, pool file, rel path in inbox)
        for i in range(args.clips):
            src = pool / f"c{i:04d}.mp4"
            make_clip(src, seed=args.seed * 100000 + i)
            rel = f"cam{i % 5}/clip {i:04d}.mp4" if i % 3 else f"clip_{i:04d}.mp4"
            how = rng.choice(["rename", "rename", "rename", "part", "slow"])
            self.drops.append((how, src, rel))
            self.valid[rel] = sha256(src)
        self.invalid: set[str] = set()
        good = (pool / "c0000.mp4").read_bytes()
        for i in range(args.invalid):
            kind = ("corrupt", "empty", "truncated", "text")[i % 4]
            data = {"corrupt": os.urandom(5000), "empty": b"", "truncated": good[: len(good) // 2],
                    "text": b"not a video\n" * 40}[kind]
            src = pool / f"bad{i:03d}.mp4"
            src.write_bytes(data)
            rel = f"bad/{kind}_{i:03d}.mp4"
            self.drops.append(("rename", src, rel))
            self.invalid.add(rel)
        self.duplicates: set[str] = set()
        for i in range(args.duplicates):
            original = pool / f"c{rng.randrange(args.clips):04d}.mp4"
            src = pool / f"dup{i:03d}.mp4"
            shutil.copyfile(original, src)
            rel = f"dups/dup_{i:03d}.mp4"
            self.drops.append(("copy-late", src, rel))
            self.duplicates.add(rel)
        rng.shuffle(self.drops)
        # Duplicates go last so their original has certainly been taken first (else the copy is the "original").
        self.drops.sort(key=lambda item: item[0] == "copy-late")

    @property
    def expected(self) -> int:
        return len(self.valid) + len(self.invalid) + len(self.duplicates)


def drop_all(plan: Plan, inbox: Path, args: argparse.Namespace, rng: random.Random, dropped: threading.Event) -> None:
    pause = args.drop_seconds / max(len(plan.drops), 1)
    burst = set(range(0, min(args.burst, len(plan.drops))))   # these arrive at once (renames, no pauses)
    for index, (how, src, rel) in enumerate(plan.drops):
        if how == "copy-late" and plan.drops[index - 1][0] != "copy-late":
            time.sleep(5)   # let the last originals be taken before their copies arrive
        target = inbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if how in ("rename", "copy-late"):
            os.rename(src, target)
        elif how == "part":
            part = target.with_name(target.name + ".part")
            shutil.copyfile(src, part)
            os.rename(part, target)
        else:   # slow: written in pieces over ~2 s
            data = src.read_bytes()
            with open(target, "wb") as handle:
                for k in range(4):
                    handle.write(data[k * len(data) // 4:(k + 1) * len(data) // 4])
                    handle.flush()
                    time.sleep(0.5)
        if index not in burst:
            time.sleep(pause * rng.uniform(0.2, 1.8))
    dropped.set()


def run_with_chaos(chaos: "Chaos", plan: Plan, state: Path, args: argparse.Namespace, rng: random.Random,
                   started: float, dropped: threading.Event) -> bool:
    """Kill and restart the daemon while dropping and for a while after, then let it finish undisturbed; True
    when every input settled before --minutes."""
    deadline = started + args.minutes * 60
    chaos_until = started + (args.minutes * 60) * 0.6
    next_kill = time.monotonic() + rng.uniform(*args.kill_every)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if chaos.process.poll() is not None:       # died on its own: that is a finding, restart and count it
            chaos.bad_exits.append(chaos.process.returncode)
            chaos.start()
        if time.monotonic() >= next_kill and time.monotonic() < chaos_until:
            chaos.interrupt()
            chaos.start()
            next_kill = time.monotonic() + rng.uniform(*args.kill_every)
        if dropped.is_set():
            rows = jobs_so_far(state)
            if len(rows) >= plan.expected and all(r["state"] in ("done", "failed", "duplicate") for r in rows):
                return True
    return False


def check_valid(plan: Plan, by_rel: dict[str, list[dict]], problems: list[str]) -> set[str]:
    """Each valid clip: one job, done, its manifest naming it with the right sha256; the output folder names."""
    done_outputs = set()
    for rel, sha in plan.valid.items():
        jobs = by_rel.get(rel, [])
        done = [j for j in jobs if j["state"] == "done"]
        if len(jobs) != 1 or len(done) != 1:
            problems.append(f"{rel}: {len(jobs)} job(s), {len(done)} done (states {[j['state'] for j in jobs]})")
            continue
        folder = Path(done[0]["output"])
        done_outputs.add(folder.name)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            if manifest["daemon"]["input"] != rel or manifest["daemon"]["sha256"] != sha:
                problems.append(f"{rel}: manifest names {manifest['daemon']['input']!r} / wrong sha256")
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{rel}: output {folder} unreadable ({exc})")
    return done_outputs


def check(plan: Plan, rows: list[dict], outbox: Path, state: Path, chaos: "Chaos", settled: bool) -> list[str]:
    problems: list[str] = []
    by_rel: dict[str, list[dict]] = {}
    for row in rows:
        by_rel.setdefault(row["rel_path"], []).append(row)
    published = {p.name for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "failed"}
    done_outputs = check_valid(plan, by_rel, problems)
    for rel in plan.invalid:
        jobs = by_rel.get(rel, [])
        if len(jobs) != 1 or jobs[0]["state"] != "failed" or not jobs[0]["error"]:
            problems.append(f"{rel}: expected one failed job with a reason, got {[(j['state'], j['error']) for j in jobs]}")
        elif not (outbox / "failed" / (Path(jobs[0]["failed_copy"]).name + ".error.txt")).is_file():
            problems.append(f"{rel}: no error note in failed/")
    for rel in plan.duplicates:
        jobs = by_rel.get(rel, [])
        if len(jobs) != 1 or jobs[0]["state"] != "duplicate":
            problems.append(f"{rel}: expected one duplicate job, got {[j['state'] for j in jobs]}")
    orphans = sorted(published - done_outputs)
    if orphans:
        problems.append(f"published folders without a done job: {orphans[:5]}")
    unexpected = sorted(set(by_rel) - set(plan.valid) - plan.invalid - plan.duplicates)
    if unexpected:
        problems.append(f"journal has inputs that were never dropped: {unexpected[:5]}")
    staging = outbox / ".staging"
    if staging.exists() and any(staging.iterdir()):
        problems.append(f"leftovers in {staging}")
    with JournalReader(state) as journal:
        integrity = journal.integrity()
    if integrity != "ok":
        problems.append(f"journal integrity_check: {integrity}")
    if chaos.bad_exits:
        problems.append(f"daemon exit codes other than 0 on SIGTERM / unexpected deaths: {chaos.bad_exits}")
    if not settled:
        problems.append("the run hit --minutes before every input was settled")
    return problems


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="facedeblur-soak-"))
    inbox, outbox, state, pool = root / "inbox", root / "outbox", root / "state", root / "pool"
    for folder in (inbox, outbox, state, pool):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "daemon.yaml").write_text(
        f"daemon:\n  inbox: [{json.dumps(str(inbox))}]\n  outbox: {json.dumps(str(outbox))}\n"
        f"  state: {json.dumps(str(state))}\n  stable_seconds: 1.0\n  rescan_seconds: 5.0\n  retry_seconds: 1.0\n"
        f"  max_attempts: 3\n  workers: {args.workers}\n  shutdown_timeout: 5.0\n", encoding="utf-8")
    plan = Plan(args, rng, pool)
    chaos = Chaos(root, sys.executable, tuple(args.kill_every), rng)
    dropped = threading.Event()
    chaos.start()
    threading.Thread(target=drop_all, args=(plan, inbox, args, rng, dropped), daemon=True).start()
    settled = run_with_chaos(chaos, plan, state, args, rng, started, dropped)
    chaos.stop()
    elapsed = time.monotonic() - started

    rows = jobs_so_far(state)
    problems = check(plan, rows, outbox, state, chaos, settled)
    log_text = (root / "daemon.log").read_text(encoding="utf-8", errors="replace")
    done_rows = [r for r in rows if r["state"] == "done"]
    summary = {
        "clips": len(plan.valid), "burst": args.burst, "invalid": len(plan.invalid),
        "duplicates": len(plan.duplicates), "journal_rows": len(rows),
        "done": len(done_rows), "failed": sum(r["state"] == "failed" for r in rows),
        "duplicate": sum(r["state"] == "duplicate" for r in rows),
        "daemon_starts": chaos.starts, "sigkills": chaos.kills, "sigterms": chaos.terms,
        "jobs_requeued_after_interruption": log_text.count("event=job_requeued"),
        "jobs_abandoned_on_sigterm": log_text.count("event=job_abandoned"),
        "already_published_recognised": log_text.count("already_published=true"),
        "max_interruptions_of_one_job": max((r["interruptions"] for r in rows), default=0),
        "elapsed_seconds": round(elapsed, 1), "settled": settled,
        "mean_job_seconds": round(sum(r["seconds"] or 0 for r in done_rows) / max(len(done_rows), 1), 2),
        "problems": problems, "workdir": str(root),
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("soak: PASS" if not problems else f"soak: FAIL ({len(problems)} problem(s))")
    if not args.keep and not problems:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
