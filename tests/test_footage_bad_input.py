"""Bad input to `facedeblur process`: one clear line on stderr, exit code 2, no traceback, and no OUTDIR left."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.config import PipelineSettings
from facedeblur.errors import FacedeblurError
from facedeblur.footage.process import load_models, process_input
from footage_support import build_sharpening_model, make_sample


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> PipelineSettings:
    settings = PipelineSettings()
    settings.restorer.model = build_sharpening_model(tmp_path_factory.mktemp("model") / "sharpen.onnx")
    return settings


@pytest.fixture(scope="module")
def models(settings):
    return load_models(settings)


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "good.mp4"
    frames = [frame for frame, _ in make_sample.synthesize_frames(192, 144, frames=12, face_height=90, seed=2)]
    make_sample.write_clip(path, frames, fps=12, crf=20)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", "process", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=120)


def assert_clean_failure(outdir: Path) -> None:
    assert not outdir.exists()
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(f".{outdir.name}.")]  # no temp folder left


def expect_error(path: Path, outdir: Path, settings, models, *words: str) -> str:
    with pytest.raises(FacedeblurError) as caught:
        process_input(path, outdir, settings, models, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert_clean_failure(outdir)
    return message


def test_zero_byte_file(tmp_path, settings, models):
    empty = tmp_path / "clip.mp4"
    empty.touch()
    expect_error(empty, tmp_path / "out", settings, models, "empty file")


def test_not_a_video(tmp_path, settings, models):
    fake = tmp_path / "holiday.mov"
    fake.write_text("this is a text file, not a video\n" * 50)
    expect_error(fake, tmp_path / "out", settings, models, "not a readable video")


def test_truncated_video(tmp_path, settings, models, good_clip):
    data = good_clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: cut off
    expect_error(truncated, tmp_path / "out", settings, models, str(truncated))


def test_corrupt_middle_gives_output_or_one_line_error(tmp_path, settings, models, good_clip):
    data = bytearray(good_clip.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start:start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    outdir = tmp_path / "out"
    try:
        manifest = process_input(corrupt, outdir, settings, models, progress=False)
    except FacedeblurError as exc:
        assert "\n" not in str(exc)
        assert_clean_failure(outdir)
    else:  # FFmpeg concealed the damage: then the result must be complete
        assert (outdir / "manifest.json").is_file() and (outdir / "restored.mp4").is_file()
        assert manifest["input"]["frames"] > 0


def test_frame_folder_with_mixed_sizes_is_taken_as_photos(tmp_path, settings, models):
    """Images of different sizes are not one camera's frames: each is processed as a photo, none refused."""
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [frame for frame, _ in make_sample.synthesize_frames(160, 120, frames=3, face_height=80)]
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame if index != 2 else cv2.resize(frame, (200, 150)))
    manifest = process_input(folder, tmp_path / "out", settings, models, progress=False)
    assert manifest["input"]["kind"] == "photos"
    assert [(p["name"], p["width"], p["height"]) for p in manifest["input"]["photos"]] == [
        ("000.png", 160, 120), ("001.png", 160, 120), ("002.png", 200, 150)]
    for name in ("000.png", "001.png", "002.png"):
        assert cv2.imread(str(tmp_path / "out" / "restored" / name)).shape[:2] == cv2.imread(str(folder / name)).shape[:2]


def test_unsupported_and_missing_inputs(tmp_path, settings, models):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    expect_error(notes, tmp_path / "out", settings, models, "unsupported input")
    expect_error(tmp_path / "missing.mp4", tmp_path / "out", settings, models, "not found")
    (tmp_path / "nothing").mkdir()
    expect_error(tmp_path / "nothing", tmp_path / "out", settings, models, "no frame images")


def test_foreign_outdir_is_never_overwritten(tmp_path, settings, models, good_clip):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "thesis.docx").write_text("precious")
    with pytest.raises(FacedeblurError, match="not empty"):
        process_input(good_clip, outdir, settings, models, progress=False)
    assert sorted(p.name for p in outdir.iterdir()) == ["thesis.docx"]


@pytest.mark.slow
def test_rerun_replaces_a_previous_result_atomically(tmp_path, settings, models, good_clip):
    outdir = tmp_path / "out"
    first = process_input(good_clip, outdir, settings, models, progress=False)
    second = process_input(good_clip, outdir, settings, models, progress=False)
    assert first["input"]["sha256"] == second["input"]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old folders left beside it


@pytest.mark.slow
def test_cli_reports_one_line_without_traceback(tmp_path, good_clip):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    result = run_cli(str(empty), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("facedeblur: error:")]
    assert len(errors) == 1 and "empty file" in errors[0]
    assert not (tmp_path / "out").exists()

    bad_config = tmp_path / "config.yaml"
    bad_config.write_text("pipeline:\n  detector:\n    strid: 2\n")
    result = run_cli(str(good_clip), "-o", str(tmp_path / "out"), "--config", str(bad_config))
    assert result.returncode == 2 and "line 3" in result.stderr and "strid" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_processes_the_built_in_sample(tmp_path):
    sample = Path(__file__).resolve().parent.parent / "src" / "facedeblur" / "sample" / "sample-clip.mp4"
    result = run_cli(str(sample), "-o", str(tmp_path / "out"), "--max-frames", "6")
    assert result.returncode == 0, result.stderr
    assert "1 track(s)" in result.stdout
    assert (tmp_path / "out" / "index.html").is_file()
