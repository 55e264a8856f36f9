#!/usr/bin/env python3
"""Load check for the review server: a journal of 10,000 jobs, the jobs list timed over real HTTP.

Builds the journal with the daemon's own schema (facedeblur.daemon.journal), adds review marks for a fifth
of the jobs, starts `facedeblur serve` as a real process on a free port, and times the list page for the
queries an analyst makes: the first page, a deep page, a status + folder filter, a name search and a date
range. Writes the figures into docs/BENCHMARKS.md ("Review server" section) unless --no-doc.

    .venv/bin/python scripts/bench_review.py [--rows 10000] [--repeats 40] [--no-doc]
"""
from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks_doc import REPO, machine, write_section

from facedeblur.daemon.journal import Journal
from facedeblur.review.store import ReviewStore

TARGET_MS = 300.0
CAMERAS = 8
HEADING = "## Review server: jobs list with 10,000 journal rows"


def build_state(root: Path, rows: int) -> tuple[Path, Path]:
    outbox, state = root / "outbox", root / "state"
    outbox.mkdir()
    state.mkdir()
    journal = Journal(state)   # creates the daemon's schema
    now = time.time()
    records = []
    for i in range(rows):
        camera = f"cam{i % CAMERAS:02d}"
        rel = f"{camera}/2026-11-{1 + i % 28:02d}/clip-{i:05d}.mp4"
        state_name = "failed" if i % 10 == 3 else "queued" if i % 40 == 7 else "running" if i % 40 == 27 else "done"
        created = now - (rows - i) * 60.0
        running = state_name == "running"
        # Running jobs carry the progress the daemon records (stage, frames done of total), shown with an ETA.
        progress = ("restoring" if i % 80 == 27 else "detecting", 300, 750, now) if running else (None,) * 4
        records.append((f"/srv/inbox/{rel}", "/srv/inbox", rel, "file", 5_000_000 + i, i, f"{i:064x}", state_name,
                        1, created, now - 20 if running else created + 1, None if running else created + 30,
                        29.0, 750, 3 + i % 5,
                        str(outbox / f"{rel.replace('/', '__')}-j{i + 1}") if state_name == "done" else None,
                        "/srv/inbox/cam03/x.mp4: not a readable video (Invalid data found when processing input)"
                        if state_name == "failed" else None, *progress))
    with journal.db:
        journal.db.executemany(
            "INSERT INTO jobs (path, inbox, rel_path, kind, size, mtime_ns, sha256, state, attempts, created_at, "
            "started_at, finished_at, seconds, frames, faces, output, error, progress_stage, progress_done, "
            "progress_total, progress_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", records)
    journal.close()
    store = ReviewStore(state)
    db = store._connect()
    with db:
        db.executemany("INSERT INTO marks (job_id, track_id, status, note, version, updated_by, updated_at) "
                       "VALUES (?,?,?,?,?,?,?)",
                       [(job, 1, "flagged" if job % 2 else "reviewed", "bench", 1, "bench", now)
                        for job in range(1, rows + 1, 5)])
    db.close()
    return outbox, state


def timed_get(port: int, path: str) -> tuple[float, int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    connection.close()
    return elapsed, response.status, body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): its work, whatever else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        root = Path(tmp)
        outbox, state = build_state(root, args.rows)
        config = root / "config.yaml"
        config.write_text(f"daemon:\n  outbox: {outbox}\n  state: {state}\n", encoding="utf-8")
        server = subprocess.Popen([sys.executable, "-m", "facedeblur", "serve", "--config", str(config), "--port", "0"],
                                  stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            line = server.stderr.readline()
            port = int(re.search(r"http://[^:]+:(\d+)/", line).group(1))
            last_page = -(-args.rows // 50)
            queries = {
                "first page": "/",
                f"page {last_page // 2} of {last_page}": f"/?page={last_page // 2}",
                f"last page ({last_page})": f"/?page={last_page}",
                "status + folder filter": "/?status=failed&folder=cam03",
                "running jobs, with progress": "/?status=running",
                "name search": "/?q=clip-0999",
                "date range, done": f"/?status=done&from={time.strftime('%Y-%m-%d', time.gmtime(time.time() - 86400 * 3))}"
                                    f"&to={time.strftime('%Y-%m-%d', time.gmtime())}",
            }
            results = []
            for label, path in queries.items():
                for _ in range(3):
                    timed_get(port, path)   # warm the page cache and the template cache
                times = []
                cpu_before = cpu_seconds(server.pid)
                for _ in range(args.repeats):
                    elapsed, status, body = timed_get(port, path)
                    assert status == 200, (path, status)
                    times.append(elapsed)
                cpu_ms = (cpu_seconds(server.pid) - cpu_before) * 1000 / args.repeats
                rows_shown = len(re.findall(rb'<tr class="job ', body))
                times.sort()
                results.append((label, path, rows_shown, statistics.median(times),
                                times[min(len(times) - 1, int(len(times) * 0.95))], times[-1], cpu_ms))
        finally:
            server.terminate()
            server.wait(timeout=30)

    worst_p95 = max(r[4] for r in results)
    table = ["| query | URL | rows shown | median ms | p95 ms | max ms | server CPU ms per request |",
             "|---|---|---:|---:|---:|---:|---:|"]
    table += [f"| {label} | `{path}` | {shown} | {median:.1f} | {p95:.1f} | {worst:.1f} | {cpu:.1f} |"
              for label, path, shown, median, p95, worst, cpu in results]
    verdict = "meets" if worst_p95 < TARGET_MS else "MISSES"
    section = "\n".join([
        HEADING, "",
        f"`scripts/bench_review.py` builds a journal of {args.rows:,} jobs ({CAMERAS} camera folders; 85% done, "
        "10% failed, 2.5% queued, 2.5% running with progress: stage, frames and ETA on every running row) with the "
        "daemon's schema and review marks on every fifth job, starts "
        "`facedeblur serve` (Starlette on uvicorn, one process, serve.threads 8) on 127.0.0.1, and times the whole jobs-list request over HTTP "
        f"(connect, query, render, read; thumbnails are separate requests) {args.repeats} times per query after 3 "
        "warm-ups. 50 jobs a page.", "",
        f"Machine: {machine()} (shared with other work while measured; load average "
        f"{os.getloadavg()[0]:.1f}), Python {platform.python_version()}. The last column is the server process's "
        "own CPU time (user + system, from /proc) per request: the work a request costs, which the load of "
        "other processes does not inflate the way it does the wall-clock columns.", "",
        *table, "",
        f"Target: list page under {TARGET_MS:.0f} ms. Worst p95 {worst_p95:.1f} ms: {verdict} the target.", "",
        "Re-run: `.venv/bin/python scripts/bench_review.py`.",
    ])
    print(section)
    if not args.no_doc:
        write_section(HEADING, section)
    return 0 if worst_p95 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
