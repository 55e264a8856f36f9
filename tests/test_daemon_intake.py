"""One real daemon, one inbox, every kind of drop at once: each valid input processed exactly once, each
invalid one in failed/ with its reason, everything else left alone.

One daemon process serves all the cases so the suite pays for one model load; each case has its own
files and its own assertions.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon_support import DaemonRun, assert_processed_exactly_once, clip_bytes, make_clip

pytestmark = pytest.mark.slow   # a real daemon

MANY = 12   # dropped at once here; scripts/soak_daemon.py drops hundreds


def _write_slowly(path: Path, data: bytes, seconds: float) -> None:
    chunks = 10
    step = len(data) // chunks + 1
    with open(path, "wb") as handle:
        for i in range(chunks):
            handle.write(data[i * step:(i + 1) * step])
            handle.flush()
            time.sleep(seconds / chunks)


def test_every_kind_of_drop(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path)
    inbox = run.inbox
    make_clip(inbox / "preexisting" / "early1.mp4", face=False, seed=901)   # there before the daemon starts
    make_clip(inbox / "preexisting" / "early2.mp4", face=False, seed=902)
    outside = tmp_path / "outside"
    make_clip(outside / "secret.mp4", face=False, seed=903)
    run.start()

    valid: list[str] = ["preexisting/early1.mp4", "preexisting/early2.mp4"]
    # Many files at once, plus a face clip (the real restorer runs on it).
    for i in range(MANY):
        make_clip(inbox / "many" / f"clip{i:02d}.mp4", face=False, seed=i)
        valid.append(f"many/clip{i:02d}.mp4")
    make_clip(inbox / "face.mp4", face=True, seed=100)
    valid.append("face.mp4")
    # Written slowly over ~10 s: must not be taken half-written.
    slow_data = clip_bytes(tmp_path, face=False, seed=101, frames=20)
    writer = threading.Thread(target=_write_slowly, args=(inbox / "slow.mp4", slow_data, 10.0))
    writer.start()
    valid.append("slow.mp4")
    # Renamed into place from an ignored temporary name, and moved in from outside the inbox.
    (inbox / "renamed.mp4.part").write_bytes(clip_bytes(tmp_path, face=False, seed=102))
    os.rename(inbox / "renamed.mp4.part", inbox / "renamed.mp4")
    make_clip(outside / "moved_in.mp4", face=False, seed=103)
    shutil.move(outside / "moved_in.mp4", inbox / "moved_in.mp4")
    valid += ["renamed.mp4", "moved_in.mp4"]
    # Awkward names, and the same name in two subfolders.
    for name, seed in (("with space.mp4", 104), ("ünïcødé 名前.mp4", 105), ("new\nline.mp4", 106),
                       ("camA/clip.mp4", 107), ("camB/clip.mp4", 108)):
        make_clip(inbox / name, face=False, seed=seed)
        valid.append(name)
    # A frame-sequence drop: one job for the folder.
    frames = inbox / "frames_drop"
    frames.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        cv2.imwrite(str(frames / f"frame_{i:04d}.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    valid.append("frames_drop")
    # The same content as an input already dropped: recognised by hash, not processed again.
    shutil.copyfile(inbox / "many" / "clip00.mp4", inbox / "dup_copy.mp4")
    # Invalid inputs: each must end in failed/ with its reason.
    good = clip_bytes(tmp_path, face=False, seed=109)
    invalid = {"corrupt.mp4": np.random.default_rng(1).integers(0, 255, 20000, dtype=np.uint8).tobytes(),
               "truncated.mp4": good[: len(good) // 2],
               "empty.mp4": b"",
               "text.mp4": b"this is a text file, not a video\n" * 50}
    for name, data in invalid.items():
        (inbox / name).write_bytes(data)
    # Same (empty) content again, while the first is still queued: it must fail with it, not pass as a
    # "duplicate" of a job that then fails (found by the soak test).
    (inbox / "empty_again.mp4").write_bytes(b"")
    # Not inputs at all: left alone and never journaled.
    ignored = ["notes.txt", "half.mp4.part", "@eaDir/thumb.mp4", ".hidden.mp4", "Thumbs.db", "backup.mp4~"]
    for name in ignored:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(good)
    (inbox / "link.mp4").symlink_to(outside / "secret.mp4")   # points outside the inbox: not followed
    # A file that disappears before it is stable.
    (inbox / "vanish.mp4").write_bytes(good[:1000])
    time.sleep(0.2)
    (inbox / "vanish.mp4").unlink()
    writer.join()

    expected_total = len(valid) + 1 + len(invalid) + 1   # + the duplicate, + empty_again
    run.wait_for(lambda: run.settled(expected_total), 240, f"{expected_total} inputs to settle")
    time.sleep(4)    # one more rescan: nothing new may appear
    jobs = run.jobs()
    assert len(jobs) == expected_total, [j["rel_path"] for j in jobs]

    assert_processed_exactly_once(run, valid)
    by_path = {j["rel_path"]: j for j in jobs}
    assert by_path["slow.mp4"]["size"] == len(slow_data)           # taken only once complete
    assert by_path["slow.mp4"]["attempts"] == 1
    face_manifest = json.loads((Path(by_path["face.mp4"]["output"]) / "manifest.json").read_text(encoding="utf-8"))
    assert face_manifest["summary"]["tracks"] >= 1
    # The journal counts people (tracks) and faces restored (one per face per frame) separately.
    assert by_path["face.mp4"]["tracks"] == face_manifest["summary"]["tracks"]
    assert by_path["face.mp4"]["faces"] == face_manifest["summary"]["faces_restored"] > by_path["face.mp4"]["tracks"]
    assert (Path(by_path["frames_drop"]["output"]) / "restored").is_dir()
    assert by_path["frames_drop"]["kind"] == "frames"
    camA, camB = Path(by_path["camA/clip.mp4"]["output"]), Path(by_path["camB/clip.mp4"]["output"])
    assert camA != camB and camA.parent == camB.parent == run.outbox
    dup = by_path["dup_copy.mp4"]
    assert dup["state"] == "duplicate" and dup["duplicate_of"] == by_path["many/clip00.mp4"]["id"]

    for name, data in invalid.items():
        job = by_path[name]
        # Unusable bytes (corrupt, truncated, empty, text) can never succeed: failed on the first attempt.
        assert job["state"] == "failed" and job["attempts"] == 1, job
        note = run.outbox / "failed" / (Path(job["failed_copy"]).name + ".error.txt")
        text = note.read_text(encoding="utf-8")
        assert re.search(r"^error: .*\S", text, re.M) and name in text
        assert Path(job["failed_copy"]).read_bytes() == data          # a faithful copy beside its reason
        assert (inbox / name).read_bytes() == data                     # after: keep -> the input stays
    again = by_path["empty_again.mp4"]
    assert again["state"] == "failed" and "same content as" in again["error"] and "which failed" in again["error"]
    assert (run.outbox / "failed" / (Path(again["failed_copy"]).name + ".error.txt")).is_file()
    for name in ignored + ["link.mp4", "vanish.mp4"]:
        assert name not in by_path
    assert all((inbox / name).exists() for name in ignored)
    assert not (run.outbox / ".staging").exists() or not any((run.outbox / ".staging").iterdir())

    status = run.status()
    assert status["counts"] == {"queued": 0, "running": 0, "done": len(valid), "failed": len(invalid) + 1,
                                "duplicate": 1, "superseded": 0}
    assert {f["input"] for f in status["recent_failures"]} == {f"inbox/{name}" for name in [*invalid, "empty_again.mp4"]}

    index = (run.outbox / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]+)/index.html"', index)
    assert len(links) == len(valid)
    newest_first = sorted((j for j in jobs if j["state"] == "done"), key=lambda j: (-j["finished_at"], -j["id"]))
    from urllib.parse import unquote
    assert [unquote(link) for link in links] == [Path(j["output"]).name for j in newest_first]
    assert "http://" not in index and "https://" not in index                     # works offline

    assert run.stop() == 0
    assert "Traceback" not in run.log()
