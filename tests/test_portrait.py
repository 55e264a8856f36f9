"""The portrait (footage/portrait.py): a track's best frame merged with its best neighbours and restored once,
on real footage (../shared/videos, skipped where absent)."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.degradations import degrade
from facedeblur.evaluation.metrics import psnr
from facedeblur.footage.portrait import PORTRAIT_SPAN, choose_portrait_frames
from facedeblur.footage.track import Observation, Track
from facedeblur.pipeline.align import FACE_TEMPLATE, warp_to_crop
from facedeblur.pipeline.detect import FaceDetector
from facedeblur.pipeline.face_crops import cut_face
from facedeblur.pipeline.temporal_fusion import TemporalFuser
from footage_support import SHARED_VIDEOS

WEBCAM = SHARED_VIDEOS / "webcam-single-face.mp4"
BLUR_PAIRS = SHARED_VIDEOS.parent / "data" / "video-blur-pairs.tar"


def webcam_frames(count: int) -> list[np.ndarray]:
    import av

    if not WEBCAM.is_file():
        pytest.skip(f"{WEBCAM} not present (team footage)")
    with av.open(str(WEBCAM)) as container:
        return [frame.to_ndarray(format="bgr24") for _, frame in zip(range(count), container.decode(video=0))]


def _observation(frame: int, sharpness: float) -> Observation:
    landmarks = np.array([[38, 50], [62, 50], [50, 62], [41, 74], [59, 74]], np.float32)
    return Observation(frame, np.array([30, 30, 70, 85], np.float32), landmarks, 0.9, sharpness)


def test_portrait_frames_are_the_best_frame_and_its_best_near_neighbours():
    observations = [_observation(frame, 10.0) for frame in range(60)]
    for frame, value in ((30, 90.0), (33, 80.0), (27, 70.0), (5, 85.0), (55, 84.0), (31, 60.0), (41, 75.0)):
        observations[frame] = _observation(frame, value)
    frames = choose_portrait_frames(Track(1, observations), reference=30)
    assert frames[:4] == [30, 33, 41, 27]  # by quality; frames 5 and 55 are sharp but too far to align
    assert len(frames) == 5 and all(abs(f - 30) <= PORTRAIT_SPAN for f in frames)


def _crops(clean: list[np.ndarray], damaged: list[np.ndarray], frames: list[int]):
    """Each frame's damaged face cut where the clean frame's face is, and the clean crop of the first."""
    detector = FaceDetector()
    crops = {}
    for frame in frames:
        face = max(detector.detect(clean[frame]), key=lambda f: f.width)
        crops[frame] = cut_face(damaged[frame], face.landmarks, 128, FACE_TEMPLATE, "resize")
    truth = warp_to_crop(clean[frames[0]], crops[frames[0]].matrix, 128)
    return crops[frames[0]].crop, [crops[frame].crop for frame in frames[1:]], truth


def test_merge_averages_noise_away():
    """Sensor noise drawn afresh per frame: every neighbour is merged and the face is far closer to the clean one."""
    clean = webcam_frames(24)
    damaged = {frame: degrade(clean[frame], "noise", np.random.default_rng([0, frame]), "severe", scale=1.9).image
               for frame in range(18, 23)}
    reference, neighbours, truth = _crops(clean, damaged, [20, 18, 19, 21, 22])
    merged: list[int] = []
    portrait = TemporalFuser().fuse(reference, neighbours, merged)
    assert merged == [0, 1, 2, 3]
    assert psnr(truth, portrait) > psnr(truth, reference) + 3.0


def test_merge_leaves_blurrier_neighbours_out():
    """Real camera shake (video-blur-pairs): the best frame's neighbours are blurrier; merging them would
    soften the portrait, so they are left out and it stays as sharp as its best frame."""
    if not BLUR_PAIRS.is_file():
        pytest.skip(f"{BLUR_PAIRS} not present (shared data)")
    clean, blurry = {}, {}
    with tarfile.open(BLUR_PAIRS) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".png"):
                image = cv2.imdecode(np.frombuffer(archive.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
                (blurry if "/blurry/" in member.name else clean)[int(Path(member.name).stem) - 1] = image
    reference, neighbours, truth = _crops(clean, blurry, [23, 22, 21, 20, 24])
    portrait = TemporalFuser().fuse(reference, neighbours)
    assert psnr(truth, portrait) >= psnr(truth, reference) - 0.1


@pytest.mark.slow
def test_every_track_has_a_portrait_shown_first(tmp_path):
    """Through the real CLI on a real clip: the portrait is recorded, written, placed where the manifest says
    and first on the card."""
    import av

    frames = webcam_frames(16)
    clip = tmp_path / "talking head.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode(None))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "facedeblur", "process", str(clip), "-o", str(out), "--no-progress"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tracks"]
    page = (out / "index.html").read_text()
    for track in manifest["tracks"]:
        portrait = track["portrait"]
        assert portrait["frame"] == track["best_frames"][0]["frame"] == portrait["frames"][0]
        assert portrait["frames_merged"][0] == portrait["frame"]
        assert set(portrait["frames_merged"]) <= set(portrait["frames"])
        images = {key: cv2.imread(str(out / portrait[key])) for key in ("original", "merged", "restored")}
        assert images["original"].shape == images["merged"].shape == images["restored"].shape
        # The matrix places the portrait in its frame: cutting the input frame with it gives the original crop.
        side = images["original"].shape[0]
        cut = warp_to_crop(frames[portrait["frame"]], np.asarray(portrait["matrix"], np.float32), side)
        assert psnr(images["original"], cut) > 30  # equal but for the clip's compression
        card = page[page.index(f'data-track="{track["id"]}"'):]
        assert card.index(portrait["restored"]) < card.index(track["best_frames"][0]["restored"])
        assert f'class="thumb portrait" data-original="{portrait["original"]}"' in card
