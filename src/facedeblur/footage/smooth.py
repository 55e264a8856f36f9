"""Stage 4, smooth: turn each track's detections into one steady face position per frame.

Detector landmarks jitter by a pixel or two from frame to frame; aligned crops would jitter with them and
the restored face would shimmer. Along each track the landmarks (and boxes) are therefore:
  1. filled in for frames without a detection (detector stride, short misses) by linear interpolation,
  2. smoothed with a centred Gaussian in time. Centred (both directions, possible because the pipeline
     tracks the whole clip before restoring) means no lag behind a moving face; the ends are padded by
     point reflection so a face moving at constant speed is left exactly where it is.
Hand-written because it is a dozen lines of numpy; scipy's filters pad differently at the ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .track import Observation, Track


@dataclass
class PlannedFace:
    """Where to restore one face in one frame."""

    track_id: int | None
    frame_index: int
    box: np.ndarray
    landmarks: np.ndarray  # smoothed; drives the alignment
    observation: Observation | None  # the detection in this frame, if there was one (None: interpolated)


def _smooth_series(values: np.ndarray, sigma: float) -> np.ndarray:
    """Centred Gaussian smoothing of a (frames, n) series; linear trends pass unchanged."""
    if sigma <= 0 or len(values) < 3:
        return values
    radius = max(1, int(round(3 * sigma)))
    kernel = cv2.getGaussianKernel(2 * radius + 1, sigma).ravel()
    pad = min(radius, len(values) - 1)
    head = 2 * values[0] - values[pad:0:-1]
    tail = 2 * values[-1] - values[-2:-pad - 2:-1]
    padded = np.concatenate([head, values, tail])
    if pad < radius:  # very short segment: repeat the reflected ends to the kernel's reach
        padded = np.concatenate([np.repeat(padded[:1], radius - pad, 0), padded, np.repeat(padded[-1:], radius - pad, 0)])
    out = np.empty_like(values)
    for column in range(values.shape[1]):
        out[:, column] = np.convolve(padded[:, column], kernel, mode="valid")
    return out


def plan_track(track: Track, max_gap: int, sigma: float, hold_until: int | None = None) -> list[PlannedFace]:
    """One PlannedFace for every frame the track covers, split where it is missing for more than `max_gap`.

    `hold_until`: keep the last position up to this frame (the clip's last frames after its last detection
    frame, with a detector stride > 1: no later detection can say whether the face is still there).
    """
    observations = track.observations
    segments: list[list[Observation]] = [[observations[0]]]
    for observation in observations[1:]:
        if observation.frame_index - segments[-1][-1].frame_index > max_gap + 1:
            segments.append([])
        segments[-1].append(observation)
    planned: list[PlannedFace] = []
    for segment in segments:
        known_frames = np.array([o.frame_index for o in segment], dtype=np.float64)
        known = np.array([np.concatenate([o.box, o.landmarks.ravel()]) for o in segment], dtype=np.float64)
        last = segment[-1].frame_index
        if segment is segments[-1] and hold_until is not None:
            last = max(last, hold_until)
        frames = np.arange(segment[0].frame_index, last + 1)
        series = np.stack([np.interp(frames, known_frames, known[:, c]) for c in range(known.shape[1])], axis=1)
        series = _smooth_series(series, sigma)
        by_frame = {o.frame_index: o for o in segment}
        for frame, row in zip(frames, series.astype(np.float32)):
            planned.append(PlannedFace(track.track_id, int(frame), row[:4].copy(), row[4:].reshape(5, 2).copy(),
                                       by_frame.get(int(frame))))
    return planned


def plan_faces(tracks: list[Track], untracked: list[Observation], max_gap: int, sigma: float,
               last_detection_frame: int | None = None, last_frame: int | None = None) -> dict[int, list[PlannedFace]]:
    """frame index -> faces to restore in it (tracked faces smoothed; untracked detections as detected)."""
    per_frame: dict[int, list[PlannedFace]] = {}
    for track in tracks:
        hold = last_frame if last_detection_frame is not None and track.last_frame == last_detection_frame else None
        for face in plan_track(track, max_gap, sigma, hold):
            per_frame.setdefault(face.frame_index, []).append(face)
    for observation in untracked:
        per_frame.setdefault(observation.frame_index, []).append(
            PlannedFace(None, observation.frame_index, observation.box, observation.landmarks, observation))
    return per_frame
