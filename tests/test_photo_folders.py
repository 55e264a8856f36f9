"""The folder rule (footage/photos.py): a folder of separate photos is processed photo by photo, a folder of
one camera's frames stays a clip. Built at test time from real face photos and real footage in ../shared
(never committed: see its MANIFEST.md); each test skips where its data is absent."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.config import PipelineSettings
from facedeblur.footage.decode import open_source
from facedeblur.footage.photos import classify_folder, sampled_steps
from facedeblur.footage.process import process_input
from facedeblur.inputs import frame_files
from footage_support import REPO, SHARED_VIDEOS

SHARED_DATA = REPO.parent / "shared" / "data"
AAF_VAL = SHARED_DATA / "aaf-val.tar"
BLUR_PAIRS = SHARED_DATA / "video-blur-pairs.tar"


def different_people(count: int) -> list[np.ndarray]:
    """The first photo of `count` different people of the All-Age-Faces validation set (file names start
    with the person's number)."""
    if not AAF_VAL.is_file():
        pytest.skip(f"{AAF_VAL} not present (shared face photos)")
    photos, people = [], set()
    with tarfile.open(AAF_VAL) as archive:
        for member in archive:
            person = Path(member.name).stem[:5]
            if member.isfile() and member.name.endswith(".webp") and person not in people:
                people.add(person)
                photos.append(cv2.imdecode(np.frombuffer(archive.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR))
                if len(photos) == count:
                    return photos
    pytest.skip(f"{AAF_VAL} holds fewer than {count} people")


def write_folder(folder: Path, images: list[np.ndarray], suffix: str = ".png") -> Path:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"{index:03d}{suffix}"), image)
    return folder


def video_frames(name: str, count: int, every: int = 1) -> list[np.ndarray]:
    import av

    path = SHARED_VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{path} not present (team footage)")
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


@pytest.mark.slow
def test_photos_of_ten_people_of_different_sizes_give_a_track_each(tmp_path):
    """The issue's target through the real CLI: ten people's photos of ten sizes give at least 9 tracks,
    each with its own gallery card, restored photo and portrait; the folder's verdict is logged and recorded."""
    scales = np.linspace(1.0, 2.35, 10)
    photos = [cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
              for photo, scale in zip(different_people(10), scales)]
    folder = write_folder(tmp_path / "witness photos", photos, ".jpg")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "facedeblur", "process", str(folder), "-o", str(out), "--no-progress"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert re.search(r"witness photos: folder of 10 image\(s\) taken as separate photos: the images have 10 "
                     r"different sizes", result.stderr), result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["kind"] == "photos"
    assert manifest["input"]["folder"]["taken_as"] == "photos"
    assert len(manifest["tracks"]) >= 9
    assert len({track["photo"] for track in manifest["tracks"]}) >= 9  # one person per photo, not one mixed track
    for track in manifest["tracks"]:
        assert track["first_frame"] == track["last_frame"]  # a track never spans two photos
        assert (out / track["portrait"]["restored"]).is_file()
    for index, photo in enumerate(photos):
        name = f"{index:03d}.jpg"
        assert cv2.imread(str(out / "restored" / name)).shape == photo.shape
        assert cv2.imread(str(out / "annotated" / name)).shape == photo.shape
    page = (out / "index.html").read_text()
    assert page.count('<article class="card"') == len(manifest["tracks"])
    assert "10 separate photo(s)" in page


@pytest.mark.slow
def test_same_size_photos_of_different_people_are_separate_photos(tmp_path, shipped_pipeline_models):
    """One size, but every step changes scene: the scene rule, not the size rule, takes them as photos."""
    photos = [cv2.resize(photo, (176, 216), interpolation=cv2.INTER_AREA) for photo in different_people(6)]
    folder = write_folder(tmp_path / "same size", photos)
    manifest = process_input(folder, tmp_path / "out", PipelineSettings(), shipped_pipeline_models, progress=False)
    assert manifest["input"]["folder"] == {"taken_as": "photos", "reason": "5 of 5 consecutive image(s) compared change scene"}
    assert manifest["input"]["fps"] is None and manifest["input"]["duration_seconds"] is None
    assert len({track["photo"] for track in manifest["tracks"]}) >= 5  # a track per person, not one for all
    assert all(frame["time"] is None for track in manifest["tracks"] for frame in track["frames"])


@pytest.mark.slow
def test_frames_of_one_camera_stay_a_clip(tmp_path, shipped_pipeline_models):
    """Frames extracted from a real clip: one size, no scene change, so one clip with one track of the person."""
    folder = write_folder(tmp_path / "frames", video_frames("webcam-single-face.mp4", 8))
    manifest = process_input(folder, tmp_path / "out", PipelineSettings(), shipped_pipeline_models, progress=False)
    assert manifest["input"]["kind"] == "frames"
    assert manifest["input"]["folder"] == {"taken_as": "frames",
                                           "reason": "one size; 0 of 7 consecutive image(s) compared change scene"}
    assert len(manifest["tracks"]) == 1 and len(manifest["tracks"][0]["frames"]) == 8
    assert (tmp_path / "out" / "annotated.mp4").is_file()


def test_real_blurred_sequence_stays_a_clip(tmp_path):
    """Consecutive frames of a speaker, blurred by real camera shake (video-blur-pairs): a clip."""
    if not BLUR_PAIRS.is_file():
        pytest.skip(f"{BLUR_PAIRS} not present (shared data)")
    with tarfile.open(BLUR_PAIRS) as archive:
        frames = [cv2.imdecode(np.frombuffer(archive.extractfile(m).read(), np.uint8), cv2.IMREAD_COLOR)
                  for m in sorted(archive.getmembers(), key=lambda m: m.name) if "/blurry/" in m.name and m.isfile()]
    folder = write_folder(tmp_path / "blurry", frames)
    source = open_source(folder)
    assert source.info.kind == "frames"
    assert source.info.folder["taken_as"] == "frames"


def test_an_edited_clip_sampled_sparsely_stays_a_clip(tmp_path):
    """Every 10th frame of the stage clip (with its three shot cuts): scene changes at a few steps only."""
    folder = write_folder(tmp_path / "stage", video_frames("stage-and-audience.mp4", 30, every=10))
    verdict = classify_folder(frame_files(folder))
    assert verdict.taken_as == "frames", verdict


def test_greyscale_photos_of_different_people_are_separate_photos(tmp_path):
    """Hue and saturation are blank in greyscale photos: the grey-level histogram tells them apart."""
    photos = [cv2.cvtColor(cv2.cvtColor(cv2.resize(photo, (176, 216)), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
              for photo in different_people(10)]
    verdict = classify_folder(frame_files(write_folder(tmp_path / "grey", photos)))
    assert verdict.taken_as == "photos", verdict


def test_a_single_image_folder_stays_as_it_was(tmp_path):
    folder = write_folder(tmp_path / "one", different_people(1))
    assert classify_folder(frame_files(folder)).taken_as == "frames"


def test_long_folders_are_sampled_not_read_whole():
    steps = sampled_steps(100_000)
    assert len(steps) == 24 and steps[0] == 0 and steps[-1] == 99_998
    assert sampled_steps(5) == [0, 1, 2, 3]
