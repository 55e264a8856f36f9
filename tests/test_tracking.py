"""The tracker's association (our ByteTrack) and its false-track rule, on box sequences with known truth.

Boxes are what YuNet gives for a face: x1, y1, x2, y2 in pixels. Each test moves faces the way people move
past a camera and checks the ids the association hands out frame by frame.
"""
from __future__ import annotations

import numpy as np
import pytest

from facedeblur.config import TrackerSettings
from facedeblur.footage.track import ByteAssociation, FaceTracker, KalmanBox, box_iou, required_detections
from facedeblur.pipeline.detect import Face


def association(**overrides) -> ByteAssociation:
    """Configured from the default settings, as FaceTracker does at detector stride 1."""
    settings = TrackerSettings()
    options = dict(high_score=settings.track_activation_threshold,
                   new_track_score=settings.track_activation_threshold + 0.1,
                   match_iou=1 - settings.minimum_matching_threshold, max_missed=settings.lost_track_buffer,
                   confirm_hits=settings.minimum_consecutive_frames)
    options.update(overrides)
    return ByteAssociation(**options)


def face_box(x: float, y: float, size: float = 40.0) -> np.ndarray:
    return np.array([x, y, x + size, y + size], dtype=np.float64)


def test_box_iou():
    a = face_box(0, 0, 10)
    assert box_iou(a, a)[0, 0] == pytest.approx(1.0)
    assert box_iou(a, face_box(5, 0, 10))[0, 0] == pytest.approx(50 / 150)
    assert box_iou(a, face_box(20, 20, 10))[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 1)


def test_kalman_learns_the_velocity_and_predicts_through_a_gap():
    kalman = KalmanBox(face_box(100, 50))
    for step in range(1, 8):  # 6 px per frame to the right
        kalman.predict()
        kalman.update(face_box(100 + 6 * step, 50))
    for _ in range(3):  # three frames without a detection
        kalman.predict(hold_size=True)
    assert kalman.box[0] == pytest.approx(100 + 6 * 10, abs=3)
    assert kalman.box[2] - kalman.box[0] == pytest.approx(40, abs=1)


def test_a_missed_detection_keeps_the_track():
    tracker = association()
    ids = []
    for frame in range(20):
        # A face walking right at 8 px per frame; the detector misses it on frames 8-11 (4 frames, about half
        # a face width of travel), then finds it where it has walked to.
        boxes = [] if 8 <= frame <= 11 else [face_box(20 + 8 * frame, 60)]
        assigned = tracker.update(np.array(boxes).reshape(-1, 4), np.full(len(boxes), 0.9))
        ids.extend(assigned)
    assert set(ids) == {1}, ids
    assert len(ids) == 16


def test_a_weak_detection_extends_a_track_but_starts_none():
    tracker = association()
    assert tracker.update(np.array([face_box(100, 100)]), np.array([0.9])) == [1]
    # The face blurs: the detector's score drops below track_activation_threshold. The second round still
    # gives the detection to the track it overlaps; a weak detection elsewhere gets no track at all.
    assigned = tracker.update(np.array([face_box(103, 100), face_box(300, 100)]), np.array([0.3, 0.3]))
    assert assigned == [1, None]
    assert tracker.update(np.array([face_box(106, 100)]), np.array([0.9])) == [1]


def test_two_faces_crossing_keep_their_ids():
    tracker = association()
    history = {}
    for frame in range(30):
        # A walks right, B walks left, B a little lower: their boxes overlap heavily for several frames.
        a, b = face_box(40 + 10 * frame, 100), face_box(330 - 10 * frame, 112)
        assigned = tracker.update(np.array([a, b]), np.array([0.9, 0.85]))
        history[frame] = assigned
    assert history[0] == [1, 2]
    assert all(assigned == [1, 2] for assigned in history.values()), history


def test_a_face_reappearing_within_the_buffer_keeps_its_id_and_later_gets_a_new_one():
    tracker = association(max_missed=10)
    assert tracker.update(np.array([face_box(200, 80)]), np.array([0.9])) == [1]
    for _ in range(6):  # behind a pillar for 6 detection frames: within the buffer
        assert tracker.update(np.zeros((0, 4)), np.zeros(0)) == []
    assert tracker.update(np.array([face_box(202, 81)]), np.array([0.9])) == [1]
    for _ in range(11):  # gone for longer than the buffer: the track is closed
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.update(np.array([face_box(202, 81)]), np.array([0.9])) == [2]


def test_a_tentative_track_is_discarded_when_its_face_vanishes_before_confirmation():
    tracker = association(confirm_hits=3)
    assert tracker.update(np.array([face_box(10, 10), face_box(200, 10)]), np.array([0.9, 0.9])) == [1, 2]
    # The face at x=200 is a one-frame false detection; the real face stays.
    assert tracker.update(np.array([face_box(12, 10)]), np.array([0.9])) == [1]
    assert tracker.discarded == [2]
    assert tracker.update(np.array([face_box(14, 10)]), np.array([0.9])) == [1]
    assert [t.confirmed for t in tracker.tracks] == [True]


def test_boxes_that_do_not_touch_never_match_even_with_the_loosest_setting():
    tracker = association(match_iou=0.0)
    assert tracker.update(np.array([face_box(10, 10)]), np.array([0.9])) == [1]
    assert tracker.update(np.array([face_box(300, 10)]), np.array([0.9])) == [2]


def test_required_detections_scale_with_the_clip():
    assert required_detections(3, 1) == 1  # a single image keeps its faces
    assert required_detections(3, 3) == 1  # so does a frame folder of three frames
    assert required_detections(3, 25) == 2
    assert required_detections(3, 1337) == 3


def _face(box: np.ndarray, score: float = 0.9) -> Face:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    landmarks = np.array([[x1 + 0.3 * w, y1 + 0.4 * h], [x1 + 0.7 * w, y1 + 0.4 * h], [x1 + 0.5 * w, y1 + 0.6 * h],
                          [x1 + 0.35 * w, y1 + 0.8 * h], [x1 + 0.65 * w, y1 + 0.8 * h]], dtype=np.float32)
    return Face(box=box.astype(np.float32), landmarks=landmarks, score=score)


def run_tracker(frames: list[list[Face]], **settings) -> FaceTracker:
    tracker = FaceTracker(TrackerSettings(use_identity=False, **settings), fps=25.0, detect_stride=1)
    image = np.zeros((240, 320, 3), np.uint8)
    for index, faces in enumerate(frames):
        tracker.update(index, image, faces)
    return tracker


def test_a_one_frame_false_track_in_a_long_clip_is_dropped_and_reported():
    frames = [[_face(face_box(100, 100, 80))] for _ in range(60)]
    frames[30].append(_face(face_box(150, 0, 30), score=0.7))  # a flicker at the top edge
    tracker = run_tracker(frames)
    tracks = tracker.finish()
    assert [len(t.observations) for t in tracks] == [60]
    assert [(d.first_frame, d.detections) for d in tracker.dropped] == [(30, 1)]
    assert "fewer than 3" in tracker.dropped[0].reason


def test_the_only_face_of_a_single_frame_is_kept():
    for frame_count in (1, 2, 3):
        tracker = run_tracker([[_face(face_box(100, 100, 80), score=0.62)]] * frame_count)
        assert len(tracker.finish()) == 1 and tracker.dropped == []


def test_score_and_size_rules():
    frames = [[_face(face_box(10, 10, 80), score=0.95), _face(face_box(200, 10, 14), score=0.95),
               _face(face_box(100, 150, 60), score=0.62)] for _ in range(40)]
    tracks = run_tracker(frames).finish()
    assert len(tracks) == 3  # the defaults leave score and size alone
    tracker = run_tracker(frames, min_track_score=0.7, min_track_face_size=20)
    tracks = tracker.finish()
    assert [t.observations[0].box[0] for t in tracks] == [10]
    assert sorted(d.reason.split()[0] for d in tracker.dropped) == ["best", "largest"]


def test_a_detection_flagged_weak_extends_a_track_but_never_starts_one():
    tracker = association()
    # 0.58 is above track_activation_threshold + 0.1, but the detector flags it weak (below its own threshold).
    assert tracker.update(np.array([face_box(100, 100)]), np.array([0.58]), np.array([True])) == [None]
    assert tracker.update(np.array([face_box(100, 100)]), np.array([0.9]), np.array([False])) == [1]
    assert tracker.update(np.array([face_box(102, 100)]), np.array([0.58]), np.array([True])) == [1]


def test_a_weak_candidate_no_track_claims_is_not_restored():
    frames = [[_face(face_box(100, 100, 80))], [_face(face_box(100, 100, 80)), _face(face_box(220, 20, 40), 0.5)]]
    frames[1][1].weak = True  # below the detector's threshold: only a track may vouch for it
    tracker = run_tracker(frames)
    assert [len(t.observations) for t in tracker.finish()] == [2]
    assert tracker.untracked == [] and tracker.dropped == []


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 3), (2, 6), (5, 2)])
def test_assignment_matches_scipys_solver_and_needs_it_only_for_several_tracks_and_faces(shape):
    """One track or one face is solved without scipy; every shape gives the pairs scipy's solver gives."""
    from scipy.optimize import linear_sum_assignment

    from facedeblur.footage.track import _assign

    rng = np.random.default_rng(sum(shape))
    for _ in range(50):
        iou = np.where(rng.random(shape) < 0.3, 0.0, rng.random(shape))
        allowed = (iou >= 0.2) & (iou > 0)
        rows, columns = linear_sum_assignment(np.where(allowed, 1.0 - iou, 1e6))
        expected = [(int(r), int(c)) for r, c in zip(rows, columns) if allowed[r, c]]
        assert _assign(iou, 0.2) == expected


def test_a_single_person_is_tracked_without_importing_scipy_optimize():
    import subprocess
    import sys

    probe = ("import sys, numpy as np\n"
             "from facedeblur.footage.track import _assign\n"
             "assert _assign(np.array([[0.7, 0.1, 0.0]]), 0.2) == [(0, 0)]\n"
             "assert _assign(np.array([[0.0], [0.5]]), 0.2) == [(1, 0)]\n"
             "print('scipy.optimize' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.strip() == "False"
