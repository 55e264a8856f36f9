"""False tracks on the team's real footage in ../shared/videos (not in the repo; skipped where absent):
`facedeblur process` must give one track per real person, and say what it dropped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from footage_support import SHARED_VIDEOS, damaged_talking_head

pytestmark = [pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"{SHARED_VIDEOS} not present (team footage)"),
              pytest.mark.slow]


def process(clip: Path, outdir: Path) -> dict:
    if not clip.exists():
        pytest.skip(f"{clip} not present")
    config = outdir.parent / "config.yaml"
    config.write_text("pipeline:\n  output:\n    write_annotated: false\n")  # the review clip is not under test
    entry = Path(sys.executable).parent / "facedeblur"
    command = [str(entry)] if entry.exists() else [sys.executable, "-m", "facedeblur"]
    result = subprocess.run([*command, "process", str(clip), "-o", str(outdir), "--config", str(config),
                             "--no-progress"], capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["summary"]["tracks_dropped"] == len(manifest["dropped_tracks"])
    return manifest


def test_talking_head_is_one_track(tmp_path):
    """One person talking to a webcam for 53 s; one-frame false detections must not become tracks."""
    manifest = process(SHARED_VIDEOS / "webcam-single-face.mp4", tmp_path / "out")
    assert manifest["input"]["frames"] == 1337
    assert manifest["summary"]["tracks"] == 1, [(t["first_frame"], t["detections"]) for t in manifest["tracks"]]
    assert manifest["tracks"][0]["detections"] >= 1300


@pytest.fixture(scope="module")
def stage_manifest(tmp_path_factory) -> dict:
    return process(SHARED_VIDEOS / "stage-and-audience.mp4", tmp_path_factory.mktemp("stage") / "out")


def test_stage_clip_keeps_real_faces_only_and_every_person(stage_manifest):
    """The stage clip's hands, microphone, logo corner and dark crowd patches are dropped with their reason;
    every labelled person (tests/data/tracks) is still found, and every kept track is a labelled face."""
    from test_tracking_truth import bench

    truth = bench.load_truth(bench.TRUTH_DIR / "stage-and-audience.json")
    assert len(stage_manifest["tracks"]) <= 10
    hypotheses = {}
    for track in stage_manifest["tracks"]:
        for entry in track["frames"]:
            hypotheses.setdefault(entry["frame"], {})[f"t{track['id']}"] = np.array(entry["box"])
    scored = bench.score(truth, hypotheses)
    assert scored["junk"] == 0 and scored["ignored"] == 0, scored["junk_tracks"]
    assert scored["found"] == scored["people"] == 8, scored["missed"]
    reasons = " ".join(d["reason"] for d in stage_manifest["dropped_tracks"])
    for rule in ("too dark and flat", "no clear face", "fewer than 3"):
        assert rule in reasons, reasons


def test_stage_clip_cut_starts_new_tracks(stage_manifest):
    """No track runs across the clip's three shot cuts (labelled before frames 20, 82 and 211)."""
    cuts = [20, 82, 211]
    for track in stage_manifest["tracks"]:
        first, last = track["first_frame"], track["last_frame"]
        assert not any(first < cut <= last for cut in cuts), (track["id"], first, last)
    # One track per person in each shot: the speaker in profile is one track in shot 2 (next test), and the
    # man in the audience is not the speaker.
    shot_of = lambda frame: sum(frame >= cut for cut in cuts)
    assert sorted(shot_of(t["first_frame"]) for t in stage_manifest["tracks"]) == [0, 0, 1, 2, 3, 3, 3, 3]


def test_stage_clip_speaker_in_profile_is_one_track(stage_manifest):
    """The speaker in profile leaves the right edge at frame 53 and turns back into view at 68, where he left,
    before a defocused audience: one track from frame 20 to 81, and no other person's frames in it."""
    from test_tracking_truth import bench

    truth = bench.load_truth(bench.TRUTH_DIR / "stage-and-audience.json")
    hypotheses = {}
    for track in stage_manifest["tracks"]:
        for entry in track["frames"]:
            hypotheses.setdefault(entry["frame"], {})[f"t{track['id']}"] = np.array(entry["box"])
    scored = bench.score(truth, hypotheses)
    assert len(scored["tracks_of"]["speaker-profile"]) == 1, scored["tracks_of"]
    assert scored["tracks_per_person"] == 1.0 and scored["id_switches"] == 0, scored["tracks_of"]
    profile = next(t for t in stage_manifest["tracks"] if f"t{t['id']}" in scored["tracks_of"]["speaker-profile"])
    assert profile["first_frame"] <= 22 and profile["last_frame"] >= 80, (profile["first_frame"], profile["last_frame"])


def test_shot_cuts_are_found_in_the_stage_clip_and_nowhere_else():
    import av

    from facedeblur.footage.shots import ShotCutDetector

    for name, expected in (("stage-and-audience.mp4", [20, 82, 211]), ("hallway-walking-and-pause.gif", []),
                           ("head-pose-two-people.gif", [])):
        clip = SHARED_VIDEOS / name
        if not clip.is_file():
            continue
        detector = ShotCutDetector()
        with av.open(str(clip)) as container:
            found = [index for index, frame in enumerate(container.decode(video=0))
                     if detector.is_cut(frame.to_ndarray(format="bgr24"))]
        assert found == expected, name


@pytest.mark.parametrize("damage", ["cctv/severe", "noise/severe"])
def test_damage_that_changes_from_frame_to_frame_is_no_shot_cut(damage):
    """Severe CCTV damage or noise, drawn afresh for every frame, shifts the colour histograms past the cut
    threshold several times in 80 frames; the scene's layout stays, so no cut is found."""
    from facedeblur.footage.shots import ShotCutDetector

    if not (SHARED_VIDEOS / "webcam-single-face.mp4").is_file():
        pytest.skip("webcam-single-face.mp4 not present")
    detector = ShotCutDetector()
    frames = damaged_talking_head(*damage.split("/"))
    assert [index for index, frame in enumerate(frames) if detector.is_cut(frame)] == []


def test_a_degraded_talking_head_is_one_track_with_every_frame_restored(tmp_path):
    """Issue 21's talking head: one person, severe CCTV damage in every frame: exactly one track, nothing
    dropped, and the face restored in all 80 frames."""
    if not (SHARED_VIDEOS / "webcam-single-face.mp4").is_file():
        pytest.skip("webcam-single-face.mp4 not present")
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(damaged_talking_head("cctv", "severe")):
        cv2.imwrite(str(folder / f"{index:06d}.png"), frame)
    manifest = process(folder, tmp_path / "out")
    assert manifest["summary"]["tracks"] == 1, [(t["first_frame"], t["last_frame"]) for t in manifest["tracks"]]
    # Nothing of the person is dropped: a second, smaller box on the same face in a damaged frame may be
    # dropped as its duplicate, and nothing else.
    assert all(d["reason"].startswith("duplicate") and d["detections"] <= 2 for d in manifest["dropped_tracks"]), \
        manifest["dropped_tracks"]
    assert manifest["summary"]["faces_restored"] == 80
