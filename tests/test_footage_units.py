"""Fast unit tests of the footage stages on small, exactly known inputs: the identity guard and re-id merge (with
an embedder that reads a colour code instead of running SFace), landmark smoothing, best-frame choice, staged
output, in-place paste-back and the writer thread."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facedeblur.config import TrackerSettings
from facedeblur.errors import FacedeblurError
from facedeblur.footage.output_folder import StagedOutput
from facedeblur.footage.select_best import choose_best_frames
from facedeblur.footage.smooth import plan_track
from facedeblur.footage.track import FaceTracker, Observation, Track
from facedeblur.pipeline.detect import Face
from facedeblur.pipeline.paste import paste_back

SIDE = 40  # face box side in the synthetic frames
COLOURS = {"red": (0, 0, 255), "blue": (255, 0, 0), "green": (0, 255, 0),
           "red turned": (0, 243, 100)}  # red in profile: SFace cosine 0.38 to red, too weak for the re-id merge


class ColourEmbedder:
    """Identity = the colour painted at the face's nose: a unit vector per colour, like SFace's per person."""

    def __init__(self) -> None:
        self.calls = 0

    def embed_faces(self, image: np.ndarray, landmarks_list) -> np.ndarray:
        self.calls += 1
        vectors = []
        for landmarks in landmarks_list:
            x, y = np.clip(np.round(landmarks[2]).astype(int), 0, (image.shape[1] - 1, image.shape[0] - 1))
            colour = image[y, x].astype(np.float32) + 1e-3
            vectors.append(colour / np.linalg.norm(colour))
        return np.array(vectors)


def _face(x: float, y: float = 60.0, score: float = 0.9, side: float = SIDE) -> Face:
    box = np.array([x, y, x + side, y + side], np.float32)
    cx, cy, unit = x + side / 2, y + side / 2, side / SIDE
    landmarks = np.array([[cx - 8, cy - 6], [cx + 8, cy - 6], [cx, cy], [cx - 6, cy + 9], [cx + 6, cy + 9]], np.float32)
    return Face(box, ((landmarks - (cx, cy)) * unit + (cx, cy)).astype(np.float32), score)


def _frame(people: list[tuple[str, float]], width: int = 400, height: int = 160) -> tuple[np.ndarray, list[Face]]:
    image = np.zeros((height, width, 3), np.uint8)
    faces = []
    for colour, x in people:
        face = _face(x)
        x1, y1, x2, y2 = face.box.astype(int)
        image[y1:y2, x1:x2] = COLOURS[colour]
        faces.append(face)
    return image, faces


def _who(frames: list[list[tuple[str, float]]], observation: Observation) -> str:
    """The person a detection really was: the one standing at its box in that frame."""
    return next(colour for colour, x in frames[observation.frame_index] if abs(x - observation.box[0]) < 0.5)


def _start_and_end(tracks: list[Track], frames) -> list[tuple[str, str]]:
    """Per track: who it followed in its first and in its last ten detections ('blue+red' if both)."""
    def who(observations) -> str:
        return "+".join(sorted({_who(frames, o) for o in observations}))
    return sorted((who(t.observations[:10]), who(t.observations[-10:])) for t in tracks)


def _run_tracker(frames: list[list[tuple[str, float]]], embedder, **settings) -> tuple[FaceTracker, list[Track]]:
    tracker = FaceTracker(TrackerSettings(**settings), fps=10.0, detect_stride=1, embedder=embedder)
    for index, people in enumerate(frames):
        image, faces = _frame(people)   # where two overlap, the later one covers the other's nose, as in life
        tracker.update(index, image, faces)
    return tracker, tracker.finish()


def _bounce() -> list[list[tuple[str, float]]]:
    """Red from the left and blue from the right meet, stand together, then each goes back where it came from.
    Motion alone (a constant-velocity filter) expects them to walk through each other."""
    frames = []
    for step in range(60):   # apart long enough for each track to collect its identity reference
        frames.append([("red", 40 + step), ("blue", 300 - step)])
    for step in range(20):   # approach until they overlap
        frames.append([("red", 100 + 4 * step), ("blue", 240 - 4 * step)])
    for _ in range(6):       # together
        frames.append([("red", 176), ("blue", 164)])
    for step in range(1, 25):  # apart again, each back to its own side
        frames.append([("red", 176 - 5 * step), ("blue", 164 + 5 * step)])
    return frames


def test_identity_guard_swaps_crossed_labels_back_when_faces_separate() -> None:
    frames = _bounce()
    # Motion alone crosses the labels: each track starts on one person and ends on the other.
    _, unguarded = _run_tracker(frames, None, use_identity=False)
    assert _start_and_end(unguarded, frames) == [("blue", "red"), ("red", "blue")]
    guarded, tracks = _run_tracker(frames, ColourEmbedder())
    assert len(tracks) == 2 and guarded.swaps >= 1
    assert _start_and_end(tracks, frames) == [("blue", "blue"), ("red", "red")]


def test_reid_merges_a_person_who_reappears_elsewhere_but_not_a_different_person() -> None:
    frames = [[("red", 40 + step)] for step in range(40)]          # red walks, then is gone for 2 s
    frames += [[] for _ in range(20)]
    frames += [[("red", 320 - step), ("green", 40 + step)] for step in range(40)]   # red back far away; green new
    tracker, tracks = _run_tracker(frames, ColourEmbedder(), reid_max_gap_seconds=5.0)
    followed = {t.track_id: {_who(frames, o) for o in t.observations} for t in tracks}
    assert sorted(followed.values(), key=sorted) == [{"green"}, {"red"}] and tracker.merges == 1
    red = next(t for t in tracks if followed[t.track_id] == {"red"})
    assert red.first_frame == 0 and red.last_frame == 99 and len(red.observations) == 80
    # Beyond reid_max_gap_seconds the two appearances stay two tracks.
    tracker, tracks = _run_tracker(frames, ColourEmbedder(), reid_max_gap_seconds=1.0)
    assert tracker.merges == 0 and len(tracks) == 3


def _leaves_and_comes_back(returning: str, x_back: float) -> list[list[tuple[str, float]]]:
    """Red walks to the right edge and out of the picture, and 0.7 s later `returning` steps in at x_back."""
    frames = [[("red", 300 + 3 * step)] for step in range(20)]      # last seen at x 357-397
    frames += [[] for _ in range(6)]
    frames += [[(returning, x_back)] for _ in range(20)]
    return frames


def test_a_face_coming_back_where_it_left_is_one_track_but_another_person_there_is_not() -> None:
    # Red comes back turned, 27 px from where it left: too unlike its reference for the re-id merge, but it
    # is where red left and does not contradict red: one track.
    frames = _leaves_and_comes_back("red turned", 330)
    tracker, tracks = _run_tracker(frames, ColourEmbedder())
    assert [(t.first_frame, t.last_frame, len(t.observations)) for t in tracks] == [(0, 45, 40)]
    assert tracker.merges == 1
    # Green takes red's place: the same place and size, but another person.
    tracker, tracks = _run_tracker(_leaves_and_comes_back("green", 330), ColourEmbedder())
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 19), (26, 45)] and tracker.merges == 0
    # Red turned, but across the picture: the place does not say it is red.
    tracker, tracks = _run_tracker(_leaves_and_comes_back("red turned", 40), ColourEmbedder())
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 19), (26, 45)] and tracker.merges == 0
    # Without identity references the place alone joins nothing.
    tracker, tracks = _run_tracker(frames, None, use_identity=False)
    assert len(tracks) == 2 and tracker.merges == 0


def test_a_face_beside_a_much_smaller_one_still_gets_its_identity_reference() -> None:
    """A close face and a small background face overlapping it: ByteTrack cannot confuse the two, so each track
    takes its identity sample. Two faces of one size that close take none (one might be the other's)."""
    def references(placed: list[tuple[str, float, float, float]]) -> list[np.ndarray | None]:
        tracker = FaceTracker(TrackerSettings(), fps=10.0, detect_stride=1, embedder=ColourEmbedder())
        image = np.zeros((300, 400, 3), np.uint8)
        faces = []
        for colour, x, y, side in placed:   # painted in order: a later face covers an earlier one
            image[int(y):int(y + side), int(x):int(x + side)] = COLOURS[colour]
            faces.append(_face(x, y, side=side))
        for index in range(3):
            tracker.update(index, image, faces)
        return [tracker.tracks[label].reference for label in sorted(tracker.tracks)]

    close, background = references([("red", 100, 40, 120), ("blue", 200, 120, 40)])
    assert close is not None and background is not None
    assert float(close @ np.array(COLOURS["red"])) / 255 > 0.99   # red's own, nothing of blue's
    assert all(reference is None for reference in references([("red", 100, 60, 40), ("blue", 145, 60, 40)]))


def _observation(frame: int, x: float, sharpness: float = 10.0, score: float = 0.9, side: float = SIDE) -> Observation:
    face = _face(x)
    box = np.array([x, 60, x + side, 60 + side], np.float32)
    return Observation(frame, box, face.landmarks, score, sharpness)


def test_smoothing_removes_jitter_keeps_a_steady_walk_and_fills_short_gaps() -> None:
    rng = np.random.default_rng(0)
    truth = 50 + 2.0 * np.arange(40)
    jitter = rng.normal(0, 3, 40)
    track = Track(1, [_observation(f, truth[f] + jitter[f]) for f in range(40) if f not in (20, 21, 22)])
    planned = plan_track(track, max_gap=5, sigma=1.5)
    assert [p.frame_index for p in planned] == list(range(40))      # the 3-frame gap is filled
    assert all(p.observation is None for p in planned if p.frame_index in (20, 21, 22))
    smoothed_x = np.array([p.box[0] for p in planned])
    inner = slice(5, 35)
    # Gaussian sigma 1.5 keeps about half of white jitter; unsmoothed it would all remain.
    assert np.abs(smoothed_x[inner] - truth[inner]).mean() < 0.75 * np.abs(jitter[inner]).mean()
    steady = Track(2, [_observation(f, 50 + 2.0 * f) for f in range(40)])
    steady_x = np.array([p.box[0] for p in plan_track(steady, max_gap=5, sigma=1.5)])
    assert np.allclose(steady_x, 50 + 2.0 * np.arange(40), atol=1e-3)      # a linear walk passes unchanged
    # A gap longer than max_gap splits the track instead of inventing a face across it.
    split = plan_track(Track(3, [_observation(f, 50) for f in list(range(10)) + list(range(30, 40))]), 5, 1.5)
    assert [p.frame_index for p in split] == list(range(10)) + list(range(30, 40))


def test_best_frames_prefer_sharp_large_frontal_faces_spread_over_the_track() -> None:
    observations = [_observation(f, 100, sharpness=5.0, side=30) for f in range(30)]
    observations[7] = _observation(7, 100, sharpness=80.0, side=48)       # the best face of the track
    observations[8] = _observation(8, 100, sharpness=79.0, side=48)       # as good, but right beside it
    observations[25] = _observation(25, 100, sharpness=60.0, side=46)
    chosen = choose_best_frames(Track(1, observations), count=2)
    assert [frame for frame, _ in chosen] == [7, 25]
    assert chosen[0][1] > chosen[1][1]
    assert [f for f, _ in choose_best_frames(Track(1, observations), count=1)] == [7]


def test_staged_output_is_all_or_nothing_and_never_replaces_foreign_files(tmp_path: Path) -> None:
    outdir = tmp_path / "result"
    staged = StagedOutput(outdir)
    (staged.path / "manifest.json").write_text("{}")
    (staged.path / "restored.png").write_bytes(b"new")
    assert not outdir.exists()                                    # nothing visible before the commit
    staged.commit()
    assert sorted(p.name for p in outdir.iterdir()) == ["manifest.json", "restored.png"]
    again = StagedOutput(outdir)                                  # a previous result is replaced whole
    (again.path / "manifest.json").write_text('{"run": 2}')
    again.commit()
    assert sorted(p.name for p in outdir.iterdir()) == ["manifest.json"]
    failed = StagedOutput(outdir)
    (failed.path / "partial.mp4").write_bytes(b"half")
    failed.discard()
    assert (outdir / "manifest.json").read_text() == '{"run": 2}'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no hidden leftovers
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FacedeblurError, match="not a facedeblur result"):
        StagedOutput(foreign)
    os.chmod(tmp_path, 0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(FacedeblurError, match="cannot create the output folder"):
                StagedOutput(tmp_path / "new")
    finally:
        os.chmod(tmp_path, 0o755)


def test_paste_back_changes_the_frame_in_place_and_only_around_the_face() -> None:
    frame = np.full((200, 300, 3), 40, np.uint8)
    before = frame.copy()
    crop = np.full((64, 64, 3), 200, np.uint8)
    matrix = np.array([[1.0, 0.0, -100.0], [0.0, 1.0, -50.0]], np.float32)   # crop origin at (100, 50)
    assert paste_back(frame, crop, matrix) is None
    assert frame[82, 132].tolist() == [200, 200, 200]                   # the middle of the face: replaced
    changed = np.argwhere(np.any(frame != before, axis=2))
    assert changed[:, 0].min() >= 49 and changed[:, 0].max() <= 115 and changed[:, 1].min() >= 99 \
        and changed[:, 1].max() <= 165


def test_the_writer_thread_keeps_order_and_hands_back_the_first_error(tmp_path: Path) -> None:
    """Outputs are written on a thread of their own: in the order submitted; once a write fails (here a real
    OSError: its folder is gone), the later writes are skipped and the error comes back to the caller."""
    from facedeblur.footage.encode import BackgroundWriter

    log = tmp_path / "order.txt"

    def append(text: str) -> None:
        with log.open("a") as handle:
            handle.write(text + "\n")

    writer = BackgroundWriter(max_queued=2)
    for index in range(50):
        writer.submit(append, str(index))
    writer.finish()
    assert log.read_text().split() == [str(i) for i in range(50)]

    gone = tmp_path / "gone"
    failing = BackgroundWriter(max_queued=2)
    failing.submit(lambda: (gone / "frame.png").write_bytes(b"x"))
    failing.submit(lambda: (tmp_path / "after.png").write_bytes(b"x"))
    with pytest.raises(FileNotFoundError):
        failing.finish()
    assert not (tmp_path / "after.png").exists()
    with pytest.raises(FileNotFoundError):  # a later submit is refused with the same error
        failing.submit(append, "never")
    assert log.read_text().split()[-1] == "49"
