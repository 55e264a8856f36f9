"""Shared helpers for the review-server tests (no tests here): one real outbox and a real server process.

The outbox is made once per test session by the real daemon (`facedeblur watch`) from the built-in sample
clip, dropped under hostile and ordinary names in two camera folders, plus an input that fails. The server
runs as `python -m facedeblur serve --port 0` in a subprocess and is reached over a real socket.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SAMPLE_CLIP = REPO / "src" / "facedeblur" / "sample" / "sample-clip.mp4"
HOSTILE_NAME = "<img src=x onerror=alert(1)>.mp4"
CAMERA_INPUTS = {"cam1/sample-clip.mp4": SAMPLE_CLIP, f"cam2/{HOSTILE_NAME}": SAMPLE_CLIP}
FAILING_INPUT = "cam2/broken.mp4"
PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-the-review-tests-0123456789"

_outbox_cache: dict[str, "Outbox"] = {}


@dataclass(frozen=True)
class Outbox:
    root: Path
    inbox: Path
    outbox: Path
    state: Path

    def jobs(self) -> list[dict]:
        db = sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]
        finally:
            db.close()

    def job_by_input(self, rel_path: str) -> dict:
        return next(j for j in self.jobs() if j["rel_path"] == rel_path)


def processed_outbox(tmp_path_factory) -> Outbox:
    """The daemon's real outbox and journal for the sample clip (made once per test session)."""
    if "outbox" in _outbox_cache:
        return _outbox_cache["outbox"]
    root = tmp_path_factory.mktemp("review-outbox")
    inbox = root / "inbox"
    for rel_path, source in CAMERA_INPUTS.items():
        (inbox / rel_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, inbox / rel_path)
    (inbox / FAILING_INPUT).write_bytes(b"this is not a video " * 500)
    _outbox_cache["outbox"] = daemon_outbox(root, len(CAMERA_INPUTS) + 1)
    return _outbox_cache["outbox"]


def daemon_outbox(root: Path, expected: int) -> Outbox:
    """Run the real daemon over the inputs already in ROOT/inbox until its `expected` jobs are done or failed."""
    inbox, outbox, state = root / "inbox", root / "outbox", root / "state"
    for folder in (inbox, outbox, state):
        folder.mkdir(exist_ok=True)
    config = root / "daemon.yaml"
    config.write_text("daemon:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in dict(
        inbox=[str(inbox)], outbox=str(outbox), state=str(state), stable_seconds=0.5, rescan_seconds=2.0,
        skip_duplicates=False, max_attempts=1, workers=1).items()), encoding="utf-8")
    log = open(root / "daemon.log", "wb")
    daemon = subprocess.Popen([PYTHON, "-m", "facedeblur", "watch", "--config", str(config)], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    result = Outbox(root, inbox, outbox, state)
    try:
        deadline = time.monotonic() + 900   # two clips on a busy 2-core machine can take minutes each
        while time.monotonic() < deadline:
            try:
                jobs = result.jobs() if (state / "journal.sqlite3").exists() else []
            except sqlite3.OperationalError:
                jobs = []   # the daemon is still creating the journal's tables
            if len(jobs) >= expected and all(j["state"] in ("done", "failed") for j in jobs):
                break
            assert daemon.poll() is None, (root / "daemon.log").read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError(f"the daemon did not settle: {result.jobs()}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()
    return result


def password_hash(password: str = PASSWORD) -> str:
    out = subprocess.run([PYTHON, "-m", "facedeblur", "serve", "--hash-password"], input=password + "\n",
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def write_serve_config(path: Path, box: Outbox, **serve: object) -> Path:
    """A config with the daemon's folders of `box` (anything with .outbox and .state) and a serve: section."""
    text = (f"daemon:\n  outbox: {json.dumps(str(box.outbox))}\n  state: {json.dumps(str(box.state))}\n"
            + ("serve:\n" + "".join(f"  {k}: {json.dumps(v, default=str)}\n" for k, v in serve.items()) if serve else ""))
    path.write_text(text, encoding="utf-8")
    return path


class Server:
    """A real `facedeblur serve` process on a free port."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None, open_files: int | None = None):
        """`open_files`: start it with that soft limit on open files (systemd's default is 1024)."""
        def limit_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        self.process = subprocess.Popen([PYTHON, "-m", "facedeblur", "serve", "--config", str(config), "--port", "0",
                                         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})}, preexec_fn=limit_files)
        line = self.process.stderr.readline()
        match = re.search(r"serving (http://[^/]+)/", line)
        if not match:
            self.process.kill()
            raise AssertionError(f"the server did not start: {line}{self.process.stderr.read()}")
        self.base = match.group(1)
        self.port = int(self.base.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process.stderr.close()

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                cookie: str | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
        """One raw HTTP request (no client-side path normalisation, so traversal reaches the server as sent)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if cookie:
            sent["Cookie"] = cookie
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        result = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        connection.close()
        return result


def session_cookie(headers: dict) -> str | None:
    """The session cookie a response set, as a Cookie header value."""
    value = headers.get("set-cookie", "")
    match = re.search(r"(facedeblur_review=[^;]+)", value)
    return match.group(1) if match else None


def csrf_of(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def one_job_copy(box: Outbox, root: Path, rel_path: str = "cam1/sample-clip.mp4") -> tuple[Outbox, int]:
    """A private outbox, inbox and journal holding one done job copied from `box`, for tests that change the
    inbox or the output under the server (the shared outbox stays as the daemon left it)."""
    from facedeblur.daemon.journal import Journal

    job = box.job_by_input(rel_path)
    inbox, outbox, state = root / "inbox", root / "outbox", root / "state"
    for folder in (inbox, outbox, state):
        folder.mkdir(parents=True)
    source = Path(job["path"])
    shutil.copyfile(source, inbox / source.name)
    output = outbox / Path(job["output"]).name
    shutil.copytree(job["output"], output, symlinks=True)
    journal = Journal(state)
    try:
        job_id = journal.add(path=str(inbox / source.name), inbox=str(inbox), rel_path=source.name, kind="file",
                             size=job["size"], mtime_ns=job["mtime_ns"], sha256=job["sha256"])
        journal.mark_done(job_id, str(output), 1.0, job["frames"], job["faces"], job.get("tracks"))
    finally:
        journal.close()
    return Outbox(root, inbox, outbox, state), job_id
