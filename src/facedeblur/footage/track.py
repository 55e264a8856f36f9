"""Stage 3, track: give every detected face a stable track id across frames.

Motion and overlap are supervision's ByteTrack (Kalman-predicted boxes, two-round matching that keeps
tracks alive through low-confidence frames and short misses). ByteTrack knows nothing about who a face
is, so when two tracked faces that overlapped (a crossing, where ByteTrack can swap ids) separate again,
their SFace embeddings are compared with each track's reference embedding, and the labels are swapped
back if that fits the identities clearly better. After the pass, tracks that end and later restart with the same
identity (someone walking behind a pillar for longer than ByteTrack's buffer) are merged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import FacedeblurError
from ..pipeline.detect import Face

log = logging.getLogger(__name__)

REFERENCE_SAMPLES = 5  # embeddings averaged into a track's identity reference
REFERENCE_EVERY = 10  # detection frames between reference samples
# Box growth (fraction of the box side) within which two faces count as crossing (ByteTrack may swap them;
# embeddings are checked, which costs one SFace run per face) and as too close for a clean identity sample.
CROSSING_CLEARANCE = 0.05
SAMPLE_CLEARANCE = 0.25
SWAP_MARGIN = 0.25  # summed cosine gain required before overruling ByteTrack's assignment
MATCH_IOU = 0.2  # detection to its (Kalman-corrected) track box
MERGE_SIMILARITY = 0.45  # SFace cosine above which two non-overlapping tracks are the same person


@dataclass
class Observation:
    """One detected face in one frame, as the tracker saw it."""

    frame_index: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    sharpness: float = 0.0  # Laplacian variance of the aligned input crop (filled by the pipeline)


@dataclass
class Track:
    track_id: int
    observations: list[Observation] = field(default_factory=list)
    reference: np.ndarray | None = None  # mean SFace embedding (normalised)
    reference_count: int = 0

    @property
    def first_frame(self) -> int:
        return self.observations[0].frame_index

    @property
    def last_frame(self) -> int:
        return self.observations[-1].frame_index

    def add_reference(self, embedding: np.ndarray) -> None:
        total = embedding if self.reference is None else self.reference * self.reference_count + embedding
        self.reference_count += 1
        self.reference = total / max(float(np.linalg.norm(total)), 1e-8)


def _expanded_boxes_touch(a: np.ndarray, b: np.ndarray, grow: float) -> bool:
    """True when two faces are near enough that a tracker could confuse them."""
    def expand(box: np.ndarray) -> np.ndarray:
        w, h = box[2] - box[0], box[3] - box[1]
        return np.array([box[0] - grow * w, box[1] - grow * h, box[2] + grow * w, box[3] + grow * h])
    a, b = expand(a), expand(b)
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


class FaceTracker:
    """Feed it the faces of each detection frame in order; read `tracks` (and `untracked`) at the end."""

    def __init__(self, settings, fps: float, detect_stride: int, embedder=None):
        import supervision as sv

        if not hasattr(sv, "ByteTrack"):  # supervision 0.27 moved ByteTrack out to the separate `trackers` package
            raise FacedeblurError(f"supervision {sv.__version__} has no ByteTrack; install 'supervision>=0.25,<0.27' "
                                  "(the version pyproject.toml pins)")
        # ByteTrack keeps a lost track for int(frame_rate / 30 * lost_track_buffer) of its updates. It is updated
        # on detection frames only, so with frame_rate=30 the buffer is given in updates: frames / stride.
        self.byte_track = sv.ByteTrack(
            track_activation_threshold=settings.track_activation_threshold,
            lost_track_buffer=max(1, -(-settings.lost_track_buffer // detect_stride)),
            minimum_matching_threshold=settings.minimum_matching_threshold,
            frame_rate=30,
            minimum_consecutive_frames=settings.minimum_consecutive_frames,
        )
        self.embedder = embedder if settings.use_identity else None
        self.reid_max_gap_frames = int(round(settings.reid_max_gap_seconds * max(fps, 1.0)))
        self.label_of: dict[int, int] = {}  # ByteTrack id -> our stable track id
        self.tracks: dict[int, Track] = {}
        self.untracked: list[Observation] = []  # detections ByteTrack did not confirm; still restored
        self.swaps = 0
        self.merges = 0
        self._touching: set[frozenset[int]] = set()  # ByteTrack id pairs overlapping at the last detection frame
        self._next_label = 1
        self._updates = 0

    def update(self, frame_index: int, image: np.ndarray, faces: list[Face]) -> list[tuple[int | None, Observation]]:
        self._updates += 1
        observations = [Observation(frame_index, f.box.astype(np.float32), f.landmarks.astype(np.float32), f.score)
                        for f in faces]
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        scores = np.array([f.score for f in faces], dtype=np.float32)
        self.byte_track.update_with_tensors(np.hstack([boxes, scores[:, None]]))
        # All tracks matched or started this frame, including ones ByteTrack has not confirmed yet (it confirms a
        # new track only on its second match): a face that moves too fast for IoU matching would otherwise be
        # dropped on every frame. Fragments of one person are joined by identity in finish().
        active = list(self.byte_track.tracked_tracks)
        pairs = self._match_detections(boxes, active)  # (ByteTrack id, face index)
        for tracker_id, _ in pairs:
            if tracker_id not in self.label_of:
                self.label_of[tracker_id] = self._next_label
                self._next_label += 1
        if self.embedder is not None:
            self._guard_identities(image, observations, pairs)
        result: list[tuple[int | None, Observation]] = []
        matched = set()
        for tracker_id, face_index in pairs:
            label = self.label_of[tracker_id]
            track = self.tracks.setdefault(label, Track(label))
            track.observations.append(observations[face_index])
            matched.add(face_index)
            result.append((label, observations[face_index]))
        for face_index, observation in enumerate(observations):
            if face_index not in matched:
                self.untracked.append(observation)
                result.append((None, observation))
        if self.embedder is not None:
            self._sample_references(image, observations, pairs)
        return result

    @staticmethod
    def _match_detections(boxes: np.ndarray, active: list) -> list[tuple[int, int]]:
        """Which detection each track took this frame.

        supervision's own update_with_detections re-matches at IoU 0.5 against the Kalman-corrected box, which
        drops fast-moving small faces (the corrected box trails the detection); every tracked track was matched
        to some detection this frame, so a loose IoU suffices to say which.
        """
        import supervision as sv
        from scipy.optimize import linear_sum_assignment

        if len(boxes) == 0 or not active:
            return []
        ious = sv.box_iou_batch(boxes, np.array([track.tlbr for track in active], dtype=np.float32))
        rows, columns = linear_sum_assignment(-ious)
        return [(int(active[c].external_track_id), int(r)) for r, c in zip(rows, columns) if ious[r, c] >= MATCH_IOU]

    def _crowded(self, observations, pairs, grow: float) -> set[int]:
        crowded = set()
        for i, (_, a) in enumerate(pairs):
            for _, b in pairs[i + 1:]:
                if _expanded_boxes_touch(observations[a].box, observations[b].box, grow):
                    crowded.update((a, b))
        return crowded

    def _sample_references(self, image, observations, pairs) -> None:
        """Collect identity samples only from faces standing apart, so a reference never mixes two people."""
        crowded = self._crowded(observations, pairs, SAMPLE_CLEARANCE)
        wanted = []
        for tracker_id, face_index in pairs:
            track = self.tracks[self.label_of[tracker_id]]
            due = track.reference_count < REFERENCE_SAMPLES and (len(track.observations) - 1) % REFERENCE_EVERY == 0
            if due and face_index not in crowded:
                wanted.append((track, face_index))
        if wanted:
            embeddings = self.embedder.embed_faces(image, [observations[i].landmarks for _, i in wanted])
            for (track, _), embedding in zip(wanted, embeddings):
                track.add_reference(embedding)

    def _guard_identities(self, image, observations, pairs) -> None:
        """When two faces that were overlapping separate, swap their labels back if ByteTrack crossed them.

        Checked at separation, not during the overlap: an occluded face embeds poorly, and checking every
        overlapping frame would cost one SFace run per face per frame in a crowd that stays close.
        """
        face_of = dict(pairs)
        touching = {frozenset((a, b)) for i, (a, face_a) in enumerate(pairs) for b, face_b in pairs[i + 1:]
                    if _expanded_boxes_touch(observations[face_a].box, observations[face_b].box, CROSSING_CLEARANCE)}
        separated = [tuple(pair) for pair in self._touching - touching if all(t in face_of for t in pair)]
        self._touching = touching
        separated = [(a, b) for a, b in separated
                     if all(self.tracks.get(self.label_of[t]) is not None and self.tracks[self.label_of[t]].reference
                            is not None for t in (a, b))]
        if not separated:
            return
        needed = sorted({face_of[t] for pair in separated for t in pair})
        embeddings = dict(zip(needed, self.embedder.embed_faces(image, [observations[i].landmarks for i in needed])))
        for tracker_a, tracker_b in separated:
            ref_a = self.tracks[self.label_of[tracker_a]].reference
            ref_b = self.tracks[self.label_of[tracker_b]].reference
            face_a, face_b = face_of[tracker_a], face_of[tracker_b]
            kept = float(embeddings[face_a] @ ref_a + embeddings[face_b] @ ref_b)
            swapped = float(embeddings[face_a] @ ref_b + embeddings[face_b] @ ref_a)
            if swapped > kept + SWAP_MARGIN:
                self.label_of[tracker_a], self.label_of[tracker_b] = self.label_of[tracker_b], self.label_of[tracker_a]
                self.swaps += 1
                log.debug("identity guard: swapped tracks %s and %s", self.label_of[tracker_a], self.label_of[tracker_b])

    def finish(self) -> list[Track]:
        """Merge re-appearing identities, renumber 1..N in order of appearance, return the tracks."""
        tracks = sorted((t for t in self.tracks.values() if t.observations), key=lambda t: t.first_frame)
        for track in tracks:
            track.observations.sort(key=lambda o: o.frame_index)
        if self.embedder is not None and self.reid_max_gap_frames > 0:
            tracks = self._merge_reappearing(tracks)
        for number, track in enumerate(sorted(tracks, key=lambda t: t.first_frame), start=1):
            track.track_id = number
        return sorted(tracks, key=lambda t: t.track_id)

    def _merge_reappearing(self, tracks: list[Track]) -> list[Track]:
        merged = True
        while merged:
            merged = False
            best = None
            for earlier in tracks:
                for later in tracks:
                    if later is earlier or earlier.reference is None or later.reference is None:
                        continue
                    gap = later.first_frame - earlier.last_frame
                    if not 0 < gap <= self.reid_max_gap_frames:
                        continue
                    similarity = float(earlier.reference @ later.reference)
                    if similarity >= MERGE_SIMILARITY and (best is None or similarity > best[0]):
                        best = (similarity, earlier, later)
            if best is not None:
                _, earlier, later = best
                earlier.observations.extend(later.observations)
                if later.reference is not None:
                    for _ in range(later.reference_count):
                        earlier.add_reference(later.reference)
                tracks.remove(later)
                self.merges += 1
                merged = True
        return tracks
