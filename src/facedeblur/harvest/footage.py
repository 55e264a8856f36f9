"""Training faces from the user's own footage: the sharpest, most frontal few frames of each tracked person.

Pass 1 detects and tracks every face (the pipeline's detector and tracker, footage/track.py) and measures
each detection the way photos are measured (size, sharpness of the aligned face). Per track, only the
detections that pass the face rules are candidates, and `select_best.choose_best_frames` (the gallery's
choice: sharpness, size, frontalness and confidence, spread over the track so near-identical neighbours
are not all picked) picks up to `per_track` of them. Pass 2 decodes again and cuts those faces out with
room around them, so `train prepare` finds and aligns exactly that face. The caller's near-copy check then
drops any pick that still looks like one already kept (a person standing still in front of a fixed camera).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import DetectorSettings, TrackerSettings
from ..footage.decode import open_source
from ..footage.select_best import choose_best_frames
from ..footage.track import FaceTracker, Track
from .checks import (NO_FACE, NOT_AN_IMAGE, TOO_BLURRED, TOO_SMALL, TURNED_AWAY, FaceQuality, Skipped, face_rule,
                     measure_face)
from .settings import HarvestSettings

log = logging.getLogger(__name__)

# Room around the face in the cut-out, as a fraction of the box side on each side: the detector in
# `train prepare` needs the head's outline to find a face, and the aligned crop reaches past the box.
CONTEXT = 0.6


@dataclass
class FootageFace:
    track_id: int
    frame_index: int
    time: float
    box: list[float]          # in the frame
    quality: FaceQuality
    image: np.ndarray         # the cut-out (BGR)


@dataclass
class FootageReport:
    frames: int = 0
    tracks: int = 0
    rejected_tracks: dict | None = None


def cut_out(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    side = max(box[2] - box[0], box[3] - box[1])
    height, width = frame.shape[:2]
    x1, y1 = int(max(0, box[0] - CONTEXT * side)), int(max(0, box[1] - CONTEXT * side))
    x2, y2 = int(min(width, box[2] + CONTEXT * side)), int(min(height, box[3] + CONTEXT * side))
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def harvest_footage(path: Path, settings: HarvestSettings, report: FootageReport,
                    on_rejected_track) -> Iterator[FootageFace]:
    """Yield the chosen faces of each track, in frame order; `on_rejected_track(reason, detail)` counts
    tracks with no face good enough."""
    from ..pipeline.detect import FaceDetector

    source = open_source(path)  # one-line errors for unreadable or unsupported input
    if source.info.kind == "image":
        raise Skipped(NO_FACE, "a single image is a photo, not footage")
    if source.info.kind == "photos":
        raise Skipped(NO_FACE, "a folder of separate photos is not footage (footage/photos.py's folder rule)")
    detector_settings = DetectorSettings(find_mosaics=False)  # a pixelated face is never a training target
    detector = FaceDetector(**detector_settings.detector_options())
    # Identity embeddings only keep two crossing people apart; a mix-up costs a harvest nothing.
    tracker = FaceTracker(TrackerSettings(use_identity=False), source.info.fps or 25.0, 1, None)
    # By observation: finish() renumbers and merges tracks, but keeps the Observation objects.
    qualities: dict[int, FaceQuality] = {}
    times: dict[int, float] = {}
    for frame in source.frames():
        report.frames += 1
        times[frame.index] = frame.time
        for track_id, observation in tracker.update(frame.index, frame.image,
                                                    detector.detect(frame.image, include_weak=True)):
            quality = measure_face(frame.image, observation.box, observation.landmarks, observation.score,
                                   settings.crop_size)
            observation.sharpness = quality.sharpness
            if track_id is not None:
                qualities[id(observation)] = quality
    tracks = tracker.finish()
    report.tracks += len(tracks)
    wanted: dict[int, list[tuple[int, object]]] = {}
    for track in tracks:
        eligible, rejections = [], {}
        for observation in track.observations:
            quality = qualities.get(id(observation))
            if quality is None or observation.score < detector.score_threshold:
                continue  # interpolated or weak: never a clean target
            try:
                face_rule(quality, settings.min_face_size, settings.min_sharpness, settings.min_frontalness)
            except Skipped as skipped:
                rejections[skipped.reason] = skipped
                continue
            eligible.append(observation)
        if not eligible:
            # The rule that failed last in face_rule's order says most: a track with a large enough, frontal but
            # blurred face is lost to blur.
            reason = (rejections.get(TOO_BLURRED) or rejections.get(TURNED_AWAY) or rejections.get(TOO_SMALL)
                      or Skipped(NO_FACE, "no confident detection"))
            on_rejected_track(reason.reason, f"track {track.track_id} (frames {track.first_frame}-{track.last_frame}): "
                                             f"{reason.detail}")
            continue
        chosen = choose_best_frames(Track(track.track_id, eligible), settings.per_track)
        by_frame = {o.frame_index: o for o in eligible}
        for frame_index, _ in chosen:
            wanted.setdefault(frame_index, []).append((track.track_id, by_frame[frame_index]))
    if not wanted:
        return
    last = max(wanted)
    for frame in source.frames():
        if frame.index > last:
            break
        for track_id, observation in wanted.get(frame.index, []):
            yield FootageFace(track_id=track_id, frame_index=frame.index, time=times.get(frame.index, frame.time),
                              box=[round(float(v), 1) for v in observation.box],
                              quality=qualities[id(observation)], image=cut_out(frame.image, observation.box))


def encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise Skipped(NOT_AN_IMAGE, "cannot encode the face as PNG")
    return encoded.tobytes()
