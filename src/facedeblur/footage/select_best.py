"""Stage 6, select: pick the frames of each track worth showing in the gallery.

A frame's quality combines, each ranked within its track so no unit dominates:
sharpness of the input face (Laplacian variance of the aligned crop; the crops all have the model's
working size, so values compare across frames), face size (box side), frontalness (nose centred between
the eyes, eyes level) and the detector's confidence. Best frames are spread over the track, so a card does
not show three near-identical neighbours.
"""
from __future__ import annotations

import numpy as np

from .track import Observation, Track

WEIGHTS = {"sharpness": 0.35, "size": 0.25, "frontalness": 0.25, "score": 0.15}


def frontalness(landmarks: np.ndarray) -> float:
    """1 for a level, frontal face; towards 0 as the head turns (nose off-centre) or rolls (eyes tilted)."""
    left_eye, right_eye, nose = landmarks[0], landmarks[1], landmarks[2]
    eye_vector = right_eye - left_eye
    eye_distance = float(np.linalg.norm(eye_vector))
    if eye_distance < 1e-3:
        return 0.0
    along = float(np.dot(nose - left_eye, eye_vector)) / eye_distance ** 2  # 0.5 when the nose is centred
    yaw_term = max(0.0, 1.0 - abs(along - 0.5) * 2.0)
    roll = abs(float(np.arctan2(eye_vector[1], eye_vector[0])))
    roll_term = max(0.0, float(np.cos(roll)))
    return yaw_term * roll_term


def _ranks(values: np.ndarray) -> np.ndarray:
    """0..1 ranks; equal values share their average rank (a stable argsort would rank later frames higher
    among equals, so a long run of identical faces would win by position alone)."""
    if len(values) == 1:
        return np.ones(1)
    return (_average_ranks(values) - 1) / (len(values) - 1)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy.stats.rankdata's 'average'; importing
    scipy.stats costs seconds of start-up in every `process` run)."""
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[group.reshape(-1)]


def quality_scores(observations: list[Observation]) -> np.ndarray:
    features = {
        "sharpness": np.array([o.sharpness for o in observations]),
        "size": np.array([min(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in observations]),
        "frontalness": np.array([frontalness(o.landmarks) for o in observations]),
        "score": np.array([o.score for o in observations]),
    }
    return sum(WEIGHTS[name] * _ranks(values) for name, values in features.items())


def choose_best_frames(track: Track, count: int) -> list[tuple[int, float]]:
    """(frame index, quality) of up to `count` best detected frames, at least a fair share of the track apart."""
    observations = track.observations
    qualities = quality_scores(observations)
    span = track.last_frame - track.first_frame + 1
    min_separation = span / (2 * count) if count > 1 else 0
    chosen: list[tuple[int, float]] = []
    for index in np.argsort(-qualities, kind="stable"):
        frame = observations[index].frame_index
        if all(abs(frame - other) >= min_separation for other, _ in chosen):
            chosen.append((frame, float(qualities[index])))
        if len(chosen) == count:
            break
    return chosen
