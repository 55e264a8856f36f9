"""End to end on the team's real footage in ../shared/videos (not in the repo; skipped where absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

from facedeblur.config import PipelineSettings
from facedeblur.footage.process import process_input
from footage_support import SHARED_VIDEOS, decode_video

pytestmark = [pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"{SHARED_VIDEOS} not present (team footage)"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def models(shipped_pipeline_models):
    return shipped_pipeline_models  # the shipped restorer: what users get


def shared(name: str) -> Path:
    path = SHARED_VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_two_people_gif_keeps_two_identities(tmp_path, models):
    settings = PipelineSettings(max_frames=20)
    manifest = process_input(shared("head-pose-two-people.gif"), tmp_path / "out", settings, models, progress=False)
    assert manifest["input"]["frames"] == 20
    assert manifest["summary"]["tracks"] == 2
    for track in manifest["tracks"]:
        assert len(track["frames"]) >= 18  # followed through (nearly) the whole excerpt
        assert (tmp_path / "out" / track["best_frames"][0]["side_by_side"]).is_file()
    frames, info = decode_video(tmp_path / "out" / "restored.mp4")
    assert len(frames) == 20 and (info["width"], info["height"]) == (480, 270)


def test_stage_clip_keeps_audio_and_timing(tmp_path, models):
    settings = PipelineSettings(max_frames=8)
    source = shared("stage-and-audience.mp4")
    manifest = process_input(source, tmp_path / "out", settings, models, progress=False)
    frames, info = decode_video(tmp_path / "out" / "restored.mp4")
    assert len(frames) == 8 and (info["width"], info["height"]) == (640, 360)
    assert info["fps"] == pytest.approx(29.97, rel=1e-3)
    assert info["audio"] == ["aac"] and manifest["input"]["audio"] == "copied (aac)"
    assert manifest["summary"]["faces_restored"] >= 8


def crossing_clip(path: Path, frames: int = 30) -> None:
    """Two real, different faces (cut from the two-people GIF) walking past each other; B passes in front."""
    import av
    import cv2
    import numpy as np

    from footage_support import make_sample

    with av.open(str(shared("head-pose-two-people.gif"))) as container:
        first = next(container.decode(video=0)).to_ndarray(format="bgr24")
    heads = [first[35:165, 300:420], first[45:170, 45:165]]  # man, woman: head and hair with some margin
    heads = [cv2.resize(h, (100, 110)) for h in heads]
    rng = np.random.default_rng(0)
    width, height = 400, 200
    scene = make_sample.background(width, height, rng)
    images = []
    for index in range(frames):
        t = index / (frames - 1)
        canvas = scene.copy()
        x_a = int(10 + t * (width - 120))  # A: left to right
        x_b = int(width - 110 - t * (width - 120))  # B: right to left, drawn last (in front)
        canvas[45:155, x_a:x_a + 100] = heads[0]
        canvas[45:155, x_b:x_b + 100] = heads[1]
        images.append(canvas)
    make_sample.write_clip(path, images, fps=10, crf=18)


def test_two_different_faces_crossing_keep_their_ids(tmp_path, models):
    from facedeblur.pipeline.identity import IdentityEmbedder
    import av
    import numpy as np

    clip = tmp_path / "crossing.mp4"
    crossing_clip(clip)
    manifest = process_input(clip, tmp_path / "out", PipelineSettings(), models, progress=False)
    tracks = [t for t in manifest["tracks"] if len(t["frames"]) >= 5]
    assert len(tracks) == 2, [(t["id"], t["first_frame"], t["last_frame"]) for t in manifest["tracks"]]
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    embedder = IdentityEmbedder()
    for track in tracks:
        entries = [e for e in track["frames"] if e["detected"]]
        start, end = entries[0], entries[-1]
        assert end["box"][0] - start["box"][0] != 0
        # The face at the end of the track is the same person as at its start (no id swap at the crossing).
        first = embedder.embed_faces(frames[start["frame"]], [np.array(start["detected_landmarks"])])[0]
        last = embedder.embed_faces(frames[end["frame"]], [np.array(end["detected_landmarks"])])[0]
        assert float(first @ last) > 0.5
    # One track moved right, the other left: each followed its own person across the whole clip.
    directions = sorted(np.sign(t["frames"][-1]["box"][0] - t["frames"][0]["box"][0]) for t in tracks)
    assert directions == [-1, 1]
    assert all(t["last_frame"] - t["first_frame"] >= 25 for t in tracks)
