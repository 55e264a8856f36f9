"""Clip timing (dropped frames, repeated timestamps) and the formats NVRs export.

Every clip here is a real file written with PyAV, run through the real `facedeblur process` command.
The hostile-input table in docs/RELIABILITY.md lists what each test shows.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from footage_support import make_sample
from daemon_support import DaemonRun

from facedeblur.inputs import VIDEO_EXTENSIONS, default_include, input_kind, sha256_of_input

MS = Fraction(1, 1000)


def _frames(count: int, seed: int = 1) -> list[np.ndarray]:
    return [frame for frame, _ in make_sample.synthesize_frames(160, 120, frames=count, face_height=60, seed=seed)]


def _process(clip: Path, outdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", "process", str(clip), "-o", str(outdir)],
                          capture_output=True, text=True, timeout=300)


def _frame_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [round(float(frame.pts * stream.time_base), 3) for frame in container.decode(stream)]


def write_clip_with_times(path: Path, times_ms: list[int], fmt: str = "mp4", codec: str = "libx264") -> Path:
    """A clip whose frames carry exactly these presentation times (ms), repeats included."""
    import av

    frames = _frames(len(times_ms))
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = 160, 120
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = stream.codec_context.time_base = MS
        for index, (image, time_ms) in enumerate(zip(frames, times_ms)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = (time_ms if codec != "mjpeg" else index), MS
            for packet in stream.encode(frame):
                if codec == "mjpeg":  # intra-only: each packet is its frame, so its time can repeat
                    packet.pts = packet.dts = time_ms
                container.mux(packet)
        container.mux(stream.encode(None))
    return path


@pytest.mark.slow
def test_a_dropped_frame_gap_keeps_its_timing(tmp_path: Path) -> None:
    # 25 fps with one 200 ms gap (four frames dropped), as CCTV recorders and phones produce.
    times = [40 * i for i in range(10)] + [360 + 200 + 40 * i for i in range(10)]
    clip = write_clip_with_times(tmp_path / "gap.mp4", times)
    assert [round(t * 1000) for t in _frame_times(clip)] == times
    result = _process(clip, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("restored.mp4", "annotated.mp4"):
        assert [round(t * 1000) for t in _frame_times(tmp_path / "out" / name)] == times, name
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["timestamps"] == "kept"
    assert manifest["input"]["frames"] == 20


@pytest.mark.slow
def test_repeated_timestamps_are_retimed_monotonically_and_recorded(tmp_path: Path) -> None:
    times = [0, 40, 80, 80, 120, 140, 160, 200, 240, 280]   # frame 3 repeats frame 2's time
    clip = write_clip_with_times(tmp_path / "repeat.mkv", times, fmt="matroska", codec="mjpeg")
    assert [round(t * 1000) for t in _frame_times(clip)] == times
    result = _process(clip, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    written = [round(t * 1000) for t in _frame_times(tmp_path / "out" / "restored.mp4")]
    # Frame 3 moves one frame step (40 ms) after frame 2; later frames keep their spacing, shifted with it.
    assert written == [0, 40, 80, 120, 160, 180, 200, 240, 280, 320]
    timestamps = json.loads((tmp_path / "out" / "manifest.json").read_text())["input"]["timestamps"]
    assert timestamps.startswith("re-timed: 1 repeated or backward timestamp(s) (first at frame 3)")


def test_an_encoder_refusal_does_not_blame_the_disk() -> None:
    from facedeblur.footage.encode import encoder_error
    import errno

    refused = encoder_error(Path("restored.mp4"), ValueError("non monotonically increasing dts"))
    assert "free disk space" not in str(refused) and "encoder refused" in str(refused)
    full = encoder_error(Path("restored.mp4"), OSError(errno.ENOSPC, "No space left on device"))
    assert "free disk space" in str(full)


# ---- the formats NVRs and cameras export ------------------------------------------------------------------

def write_encoded(path: Path, fmt: str, codec: str, frames: int = 8, audio: bool = False) -> Path:
    """A clip in container/stream format `fmt` (mpegts, h264 and hevc elementary streams), 25 fps."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=error"}
        sound = container.add_stream("aac", rate=16000) if audio else None
        for index, image in enumerate(_frames(frames)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if sound is not None:
            for start in range(0, 16000 * frames // 25, 1024):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


def write_dahua_dav(path: Path, frames: int = 8) -> Path:
    """A Dahua DHAV file as NVRs export it: H.264 frames, each in a 'DHAV' header (type, frame number,
    length, packed date, ms timestamp, size/codec extensions) and a 'dhav' trailer. PyAV has no DHAV
    muxer, so the container is written here, following FFmpeg's dhav demuxer."""
    import av

    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 160, 120, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 25), Fraction(25)
    encoder.options = {"tune": "zerolatency"}   # no B-frames: DHAV carries one timestamp per frame
    packets = []
    for index, image in enumerate(_frames(frames)):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = index
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    date = (26 << 26) | (11 << 22) | (24 << 17) | (8 << 12)   # 2026-11-24 08:00:00, packed as Dahua does
    data = bytearray()
    for number, packet in enumerate(packets):
        payload, ms = bytes(packet), number * 40
        ext = bytes([0x82, 0, 0, 0]) + struct.pack("<HH", 160, 120) + bytes([0x81, 0, 0x02, 25])  # size; H.264, 25 fps
        length = 24 + len(ext) + len(payload) + 8
        data += b"DHAV" + bytes([0xFD if packet.is_keyframe else 0xFC, 0, 0, 0])
        data += struct.pack("<IIIHBB", number, length, date + ms // 1000, ms % 1000, len(ext), 0)
        data += ext + payload + b"dhav" + struct.pack("<I", length)
    path.write_bytes(bytes(data))
    return path


NVR_EXPORTS = {
    "clip.ts": lambda p: write_encoded(p, "mpegts", "libx264", audio=True),
    "clip.264": lambda p: write_encoded(p, "h264", "libx264"),
    "clip.h265": lambda p: write_encoded(p, "hevc", "libx265"),
    "clip.dav": write_dahua_dav,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NVR_EXPORTS))
def test_nvr_exports_are_processed(tmp_path: Path, name: str) -> None:
    clip = NVR_EXPORTS[name](tmp_path / name)
    assert input_kind(clip) == "video"
    result = _process(clip, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["frames"] == 8 and manifest["input"]["sha256"] == sha256_of_input(clip)
    times = _frame_times(tmp_path / "out" / "restored.mp4")
    # 25 fps from the container's start: a .dav's wall-clock times (2026) and the MPEG-TS clock offset are
    # not carried over as a long blank start (the video keeps its small offset to the audio's start); raw
    # streams carry no timestamps, so they are made, and the manifest says so.
    assert 0 <= times[0] < 0.1
    assert [t - times[0] for t in times] == pytest.approx([0.04 * i for i in range(8)], abs=0.002)
    expected = "re-timed: 8 frame(s) without a timestamp" if name in ("clip.264", "clip.h265") else "kept"
    assert manifest["input"]["timestamps"].startswith(expected)
    if name == "clip.ts":   # the copied audio moved with the video: both start at 0
        import av
        with av.open(str(tmp_path / "out" / "restored.mp4")) as container:
            audio = container.streams.audio[0]
            first = next(p for p in container.demux(audio) if p.pts is not None)
            assert abs(float(first.pts * audio.time_base)) < 0.1


def test_one_home_for_the_extensions(tmp_path: Path) -> None:
    from facedeblur.config import DaemonSettings
    from facedeblur.daemon.scanning import InputRules

    for ext in (".ts", ".264", ".h264", ".h265", ".dav", ".mp4"):
        assert ext in VIDEO_EXTENSIONS and input_kind(tmp_path / f"x{ext.upper()}") == "video"
    assert input_kind(tmp_path / "notes.txt") is None and input_kind(tmp_path) == "frames"
    rules = InputRules(DaemonSettings(inbox=[tmp_path], outbox=tmp_path / "o", state=tmp_path / "s"))
    assert DaemonSettings.model_fields["include"].default_factory() == default_include()
    assert all(rules.included_file(f"cam{ext}") for ext in VIDEO_EXTENSIONS)
    assert not rules.included_file("notes.txt")


@pytest.mark.slow
def test_manifest_and_journal_agree_on_the_hash_through_the_daemon(tmp_path: Path) -> None:
    import cv2

    staging = tmp_path / "make"
    staging.mkdir()
    inputs = {name: make(staging / name) for name, make in NVR_EXPORTS.items() if name in ("clip.ts", "clip.dav")}
    inputs["clip.264"] = write_encoded(staging / "clip.264", "h264", "libx264")
    frames = staging / "cam frames"
    frames.mkdir()
    # Natural order (f1, f2, f10) differs from name order (f1, f10, f2); a hidden file is no frame.
    for number, image in zip((1, 2, 10), _frames(3)):
        cv2.imwrite(str(frames / f"f{number}.png"), image)
    (frames / ".thumbs.png").write_bytes(b"not a frame")
    inputs["cam frames"] = frames
    run = DaemonRun(tmp_path / "d", stable_seconds=0.5).start()
    try:
        for name, path in inputs.items():
            path.rename(run.inbox / name)
        run.wait_for(lambda: run.settled(len(inputs)) and len(run.jobs()) == len(inputs), 240,
                     "every NVR export and the frame folder to finish")
        jobs = {job["rel_path"]: job for job in run.jobs()}
        assert {name: job["state"] for name, job in jobs.items()} == {name: "done" for name in inputs}, \
            [(j["rel_path"], j["error"]) for j in jobs.values()]
        for name, job in jobs.items():
            manifest = json.loads((Path(job["output"]) / "manifest.json").read_text())
            assert manifest["input"]["sha256"] == job["sha256"] == manifest["daemon"]["sha256"], name
            assert job["sha256"] == sha256_of_input(run.inbox / name), name
        assert jobs["cam frames"]["kind"] == "frames"
    finally:
        assert run.stop() == 0
