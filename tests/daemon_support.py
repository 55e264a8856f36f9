"""Shared helpers for the daemon tests (no tests here): tiny real clips and a real daemon process.

The daemon runs as `python -m facedeblur watch` in a subprocess with short stability and rescan times;
the tests observe it only through the filesystem, its journal and `facedeblur status --json`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facedeblur.daemon.journal import FINISHED_STATES, jobs_so_far

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _face_image(width: int, height: int) -> np.ndarray:
    from skimage import data
    import cv2
    astronaut = data.astronaut()[:, :, ::-1]           # RGB -> BGR, 512x512 with one large face
    return cv2.resize(astronaut, (width, height), interpolation=cv2.INTER_AREA)


def make_clip(path: Path, frames: int = 10, width: int = 160, height: int = 120, face: bool = True,
              seed: int = 0) -> Path:
    """A short real H.264/MPEG-4 clip, written with PyAV. `seed` makes clips of different content."""
    import av
    rng = np.random.default_rng(seed)
    base = _face_image(width, height) if face else rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"threads": "1"}   # the same bytes on every machine (see make_sample.write_clip)
        for i in range(frames):
            # A little drift and noise per frame: a real, changing clip, distinct per seed.
            frame_bgr = np.roll(base, i, axis=1).astype(np.int16) + rng.integers(-6, 6, base.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(frame_bgr, 0, 255).astype(np.uint8), format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip_bytes(tmp: Path, **kwargs) -> bytes:
    """A clip's bytes, for tests that write it themselves (slowly, renamed, truncated...)."""
    path = tmp / f".clip-{time.monotonic_ns()}.mp4"
    make_clip(path, **kwargs)
    data = path.read_bytes()
    path.unlink()
    return data


def write_config(path: Path, **daemon: object) -> Path:
    lines = ["daemon:"]
    for key, value in daemon.items():
        lines.append(f"  {key}: {json.dumps(value, default=str)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


FAST = dict(stable_seconds=1.0, rescan_seconds=3.0, retry_seconds=1.0, max_attempts=2, workers=1,
            shutdown_timeout=20.0)


class DaemonRun:
    """A real `facedeblur watch` process on real folders."""

    started: list[subprocess.Popen] = []   # every daemon the tests started; conftest kills leftovers after each test

    def __init__(self, root: Path, outbox: Path | None = None, **settings: object):
        """`outbox`: another run's outbox, for daemons that share one."""
        self.root = root
        self.inbox, self.outbox, self.state = root / "inbox", outbox or root / "outbox", root / "state"
        for folder in (self.inbox, self.outbox, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        self.settings = {**FAST, **settings}
        self.config = write_config(root / "daemon.yaml", inbox=[str(self.inbox)], outbox=str(self.outbox),
                                   state=str(self.state), **self.settings)
        self.log_path = root / "daemon.log"
        self.process: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True, prefix: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> "DaemonRun":
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen([*prefix, PYTHON, "-m", "facedeblur", "watch", "--config", str(self.config)],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env)
        DaemonRun.started.append(self.process)
        log.close()
        if wait_ready:
            self.wait_for(lambda: "event=ready" in self.log(), 120, "the daemon to become ready")
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; jobs={self.jobs()}\n{self.log()[-3000:]}")

    def jobs(self) -> list[dict]:
        return jobs_so_far(self.state)

    def settled(self, expected: int) -> bool:
        """`expected` jobs known and none queued or running."""
        jobs = self.jobs()
        return len(jobs) >= expected and all(j["state"] in FINISHED_STATES for j in jobs)

    def status(self) -> dict:
        out = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--json", "--state", str(self.state)],
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)

    def published(self) -> list[Path]:
        """Output folders in the outbox (not failed/, not hidden staging)."""
        return sorted(p for p in self.outbox.iterdir() if p.is_dir() and p.name != "failed"
                      and not p.name.startswith("."))

    def manifests(self) -> list[dict]:
        return [json.loads((p / "manifest.json").read_text(encoding="utf-8")) for p in self.published()]


def kill_leftover_daemons() -> None:
    """A test that failed half-way leaves its daemon running; it must not load the machine for the next tests."""
    for process in DaemonRun.started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    DaemonRun.started.clear()


def assert_processed_exactly_once(run: DaemonRun, rel_paths: list[str]) -> None:
    """Each input has exactly one done job and exactly one published folder whose manifest names it."""
    done = [j for j in run.jobs() if j["state"] == "done"]
    assert sorted(j["rel_path"] for j in done) == sorted(rel_paths), run.jobs()
    manifests = run.manifests()
    assert sorted(m["daemon"]["input"] for m in manifests) == sorted(rel_paths)
    for job in done:
        folder = Path(job["output"])
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["daemon"]["sha256"] == job["sha256"]
        assert manifest["daemon"]["job_id"] == job["id"]
        assert (folder / "index.html").is_file()


@contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (e.g. "2m") at `mount_point`, so "disk full" is the kernel's own ENOSPC.
    Skips the test where mounting is not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    import pytest
    mount_point.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (container without CAP_SYS_ADMIN)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
