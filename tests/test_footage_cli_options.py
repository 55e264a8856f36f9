"""`facedeblur process` command-line options, through the real CLI: an existing -o folder, a raw stream's frame rate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

from cli_support import one_error_line
from footage_support import make_sample


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", "process", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def frames():
    return [frame for frame, _ in make_sample.synthesize_frames(160, 120, frames=24, face_height=70, seed=4)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_sample.write_clip(path, frames[:6], fps=12, crf=20)
    return path


@pytest.fixture(scope="module")
def raw_stream(tmp_path_factory, frames) -> Path:
    """24 frames recorded at 12 fps as a raw H.264 elementary stream (no container, no frame rate)."""
    path = tmp_path_factory.mktemp("raw") / "camera.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def duration_of(video: Path) -> float:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def test_existing_output_folder_is_refused_without_overwrite(tmp_path, clip):
    out = tmp_path / "out"
    assert run_cli(clip, "-o", out).returncode == 0
    first = (out / "manifest.json").stat().st_mtime_ns
    one_error_line(run_cli(clip, "-o", out), str(out), "already exists", "--overwrite")
    assert (out / "manifest.json").stat().st_mtime_ns == first  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and nothing staged beside it
    result = run_cli(clip, "-o", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (out / "manifest.json").stat().st_mtime_ns != first
    # --overwrite never replaces a folder that is not a facedeblur result.
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.docx").write_text("precious")
    one_error_line(run_cli(clip, "-o", foreign, "--overwrite"), "not a facedeblur result")
    assert [p.name for p in foreign.iterdir()] == ["chapter1.docx"]
    # An existing empty folder holds nothing to lose.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(clip, "-o", empty).returncode == 0


def test_raw_stream_without_fps_warns_and_takes_fps(tmp_path, raw_stream):
    result = run_cli(raw_stream, "-o", tmp_path / "default")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "no frame rate" in warnings[0] and "--fps" in warnings[0], result.stderr
    assert duration_of(tmp_path / "default" / "restored.mp4") == pytest.approx(24 / 25, abs=0.05)

    result = run_cli(raw_stream, "-o", tmp_path / "twelve", "--fps", "12")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert duration_of(tmp_path / "twelve" / "restored.mp4") == pytest.approx(24 / 12, abs=0.1)

    config = tmp_path / "config.yaml"
    config.write_text("pipeline:\n  raw_stream_fps: 12\n")
    result = run_cli(raw_stream, "-o", tmp_path / "configured", "--config", config)
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr
    assert duration_of(tmp_path / "configured" / "restored.mp4") == pytest.approx(24 / 12, abs=0.1)

    one_error_line(run_cli(raw_stream, "-o", tmp_path / "bad", "--fps", "0"), "--fps")
