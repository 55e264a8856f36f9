"""Stage 3, track: give every detected face a stable track id across frames.

Motion and overlap: ByteTrack's association, written here (ByteAssociation below): a constant-velocity
Kalman filter predicts each track's box, then detections are matched to the predictions by IoU in two
rounds, confident detections first, then weak ones against the tracks still unmatched, so a face that
blurs for a few frames keeps its track instead of ending it. Why our own and not a package: every
maintained tracker package pulls the GUI OpenCV wheel (supervision 0.26, trackers, boxmot declare
opencv-python) or pins numpy<2 (norfair). A second OpenCV wheel in the environment overwrites the headless
cv2 with one that needs libGL, X11 and Qt, and `import cv2` then fails on a minimal server (tests/test_install.py checks). The
association is a hundred lines of numpy and scipy's assignment solver (imported only when two or more
tracks meet two or more detections).

ByteTrack knows nothing about who a face is, so when two tracked faces that overlapped (a crossing, where
ByteTrack can swap ids) separate again, their SFace embeddings are compared with each track's reference
embedding, and the labels are swapped back if that fits the identities clearly better. After the pass,
tracks that end and later restart with the same identity (someone walking behind a pillar for longer than
the lost-track buffer) are merged, and tracks no real face would produce (a single frame in a long clip,
never a confident detection, always tiny) are dropped and reported.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..pipeline.detect import Face

log = logging.getLogger(__name__)

REFERENCE_SAMPLES = 5  # embeddings averaged into a track's identity reference
REFERENCE_EVERY = 10  # detection frames between reference samples
# Box growth (fraction of the box side) within which two faces count as crossing (ByteTrack may swap them;
# embeddings are checked, which costs one SFace run per face) and as too close for a clean identity sample.
CROSSING_CLEARANCE = 0.05
SAMPLE_CLEARANCE = 0.25
# Faces this many times apart in size never count as close: ByteTrack cannot hand one's track to the other (their
# boxes overlap at IoU 1/2.5² = 0.16 at most, below its matching IoU) and each aligned crop shows its own face
# (the stage clip's speaker in profile, 170 px, before a defocused audience of 50-60 px faces).
CONFUSABLE_SIZE_RATIO = 2.5
SWAP_MARGIN = 0.25  # summed cosine gain required before overruling ByteTrack's assignment
MERGE_SIMILARITY = 0.45  # SFace cosine above which two non-overlapping tracks are the same person
# Face evidence (verify_faces), sampled like the identity reference from SFace's 112 px crops; the values
# separate the stage clip's hands, microphone, logo corner and dark crowd patches from every labelled face of
# the team's clips (tests/data/tracks; measured in docs/footage-pipeline.md, "False tracks").
EVIDENCE_SAMPLES = 5
DARK_BRIGHTNESS = 50  # mean grey level of the face's centre below which ...
FLAT_CONTRAST = 12  # ... a standard deviation below this shows no features: a dark patch
WEAK_FEATURE_LENGTH = 6.5  # SFace feature length (median) below which the recogniser sees no clear face ...
WEAK_SCORE = 0.8  # ... and the detector's median score below this ...
WEAK_MAX_SIZE = 96  # ... on a face never this large (a close profile is weak to both, and large)
BLURRED_FEATURE_LENGTH = 7.0  # a face below this, ...
BLURRED_SHARPNESS = 8.0  # ... this sharp at most (median Laplacian variance of its crops), ...
BLURRED_MAX_SIZE = 80  # ... and never this large is a defocused background face no restorer can recover
DUPLICATE_OVERLAP = 0.3  # a track whose boxes share this much of their area with a longer track's in every frame
DUPLICATE_MAX_FRAMES = 2  # ... (or in a frame this near) is the same face twice
# Two tracks of one shot whose faces meet (IoU >= HANDOVER_IOU within HANDOVER_FRAMES frames) while they share
# at most HANDOVER_SHARED frames are one face whose track ByteTrack lost and restarted (a fast turn or move):
# joined, unless their identities disagree (SFace cosine below HANDOVER_MIN_SIMILARITY: different people).
HANDOVER_IOU = 0.5
HANDOVER_FRAMES = 2
HANDOVER_SHARED = 2
HANDOVER_MIN_SIMILARITY = 0.2
# A face that leaves the picture or is hidden and comes back where it left (the stage clip's speaker leaves the
# right edge for 15 frames and turns back in): a track that ends and one that starts in the same shot within
# REJOIN_SECONDS, the later's first face within REJOIN_DISTANCE of the larger face's longer side of the earlier's
# last face (centre to centre) and at most REJOIN_SIZE_RATIO larger or smaller, are one face when both have
# identity references that agree at REJOIN_MIN_SIMILARITY. Without both references they stay apart: the place
# alone cannot tell a face from another person taking its place.
REJOIN_SECONDS = 1.0
REJOIN_DISTANCE = 1.0
REJOIN_SIZE_RATIO = 2.0
REJOIN_MIN_SIMILARITY = 0.3
# ByteTrack's fixed thresholds: a weak detection must overlap its track's prediction well (it is only
# trusted because the track is already there), and a tentative track has no velocity estimate yet.
LOW_SCORE_MATCH_IOU = 0.5
TENTATIVE_MATCH_IOU = 0.3
NEW_TRACK_MARGIN = 0.1  # a new track needs track_activation_threshold + this (ByteTrack's det_thresh)
# Kalman noise, as fractions of the box side per detection frame: measured boxes jitter by about 5 %,
# and a face's velocity changes slowly between detection frames.
POSITION_NOISE = 1 / 20
VELOCITY_NOISE = 1 / 160


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N x 4, x1 y1 x2 y2) with every box in b (M x 4): N x M."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _assign(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Row-column pairs maximising the total IoU, using only pairs with IoU >= min_iou.

    Pairs below the threshold are priced out before solving (not filtered after), so the solver never
    gives up a valid pair to make room for one that is then rejected.
    """
    if iou.size == 0:
        return []
    allowed = (iou >= min_iou) & (iou > 0)  # boxes that do not touch never match, whatever the setting
    if not allowed.any():
        return []
    cost = np.where(allowed, 1.0 - iou, 1e6)
    if min(cost.shape) == 1:
        # One track or one detection (most frames of most clips): the cheapest pair is the whole answer
        # (some pair is allowed, so it is), and importing scipy.optimize costs over half a CPU second of
        # every run's start-up.
        row, column = np.unravel_index(int(np.argmin(cost)), cost.shape)
        return [(int(row), int(column))]
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, columns) if allowed[r, c]]


class KalmanBox:
    """Constant-velocity Kalman filter on a box: state (cx, cy, w, h) and their velocities per detection frame.

    Noise scales with the box size, so a 20 px face and a 400 px face are followed equally well.
    """

    _F = np.eye(8) + np.eye(8, k=4)  # position += velocity, once per detection frame
    _H = np.eye(4, 8)

    def __init__(self, box: np.ndarray):
        measured = self._to_state(box)
        self.mean = np.concatenate([measured, np.zeros(4)])
        size = self._size_scale(measured)
        self.covariance = np.diag(np.concatenate([2 * POSITION_NOISE * size, 10 * VELOCITY_NOISE * size]) ** 2)

    @staticmethod
    def _to_state(box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in box)
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])

    @staticmethod
    def _size_scale(state: np.ndarray) -> np.ndarray:
        w, h = max(state[2], 1.0), max(state[3], 1.0)
        return np.array([w, h, w, h])

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.mean[:4]
        w, h = max(w, 1.0), max(h, 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def predict(self, hold_size: bool = False) -> None:
        if hold_size:  # unobserved, a face's size should not keep growing or shrinking
            self.mean[6:] = 0.0
        size = self._size_scale(self.mean[:4])
        noise = np.diag(np.concatenate([POSITION_NOISE * size, VELOCITY_NOISE * size]) ** 2)
        self.mean = self._F @ self.mean
        self.covariance = self._F @ self.covariance @ self._F.T + noise

    def update(self, box: np.ndarray) -> None:
        measured = self._to_state(box)
        noise = np.diag((POSITION_NOISE * self._size_scale(measured)) ** 2)
        projected = self._H @ self.covariance @ self._H.T + noise
        gain = np.linalg.solve(projected, self._H @ self.covariance).T  # P H^T S^-1 (S and P symmetric)
        self.mean = self.mean + gain @ (measured - self._H @ self.mean)
        self.covariance = self.covariance - gain @ self._H @ self.covariance


@dataclass
class MotionTrack:
    """One track as the association sees it: a Kalman-filtered box and how recently it was matched."""

    track_id: int
    kalman: KalmanBox
    hits: int = 1  # matched detection frames so far
    missed: int = 0  # detection frames since the last match
    confirmed: bool = False


class ByteAssociation:
    """ByteTrack's association, one `update` per detection frame; returns each detection's track id.

    Per update: predict every track; round 1 matches confident detections (score >= high_score) to confirmed
    tracks, including lost ones, at IoU >= match_iou; round 2 matches the weak detections to the confirmed
    tracks that were seen last frame and are still unmatched, at IoU >= 0.5; round 3 gives the remaining
    confident detections to tentative tracks (IoU >= 0.3). A confident detection left over (score >=
    new_track_score) starts a tentative track, confirmed after `confirm_hits` matches in a row. A tentative
    track that misses a frame is discarded (its id lands in `discarded`); a confirmed one is kept, unmatched,
    for `max_missed` detection frames. A weak detection left over gets no track (None). `weak` marks
    detections that count as weak whatever their score (the detector's candidates below its own threshold).
    """

    def __init__(self, high_score: float, new_track_score: float, match_iou: float, max_missed: int,
                 confirm_hits: int = 1):
        self.high_score = high_score
        self.new_track_score = new_track_score
        self.match_iou = match_iou
        self.max_missed = max_missed
        self.confirm_hits = confirm_hits
        self.tracks: list[MotionTrack] = []
        self.discarded: list[int] = []  # tentative tracks that vanished before confirmation, in order
        self._next_id = 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, weak: np.ndarray | None = None) -> list[int | None]:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        strong = scores >= self.high_score
        if weak is not None:
            strong &= ~np.asarray(weak, bool).reshape(-1)
        for track in self.tracks:
            track.kalman.predict(hold_size=track.missed > 0)
        assigned: list[int | None] = [None] * len(boxes)
        matched: set[int] = set()

        def match(candidates: list[MotionTrack], detections: list[int], min_iou: float) -> None:
            if not candidates or not detections:
                return
            predicted = np.array([t.kalman.box for t in candidates])
            for row, column in _assign(box_iou(boxes[detections], predicted), min_iou):
                track, index = candidates[column], detections[row]
                track.kalman.update(boxes[index])
                track.hits += 1
                track.missed = 0
                track.confirmed = track.confirmed or track.hits >= self.confirm_hits
                assigned[index] = track.track_id
                matched.add(track.track_id)

        high = [i for i in range(len(boxes)) if strong[i]]
        low = [i for i in range(len(boxes)) if not strong[i]]
        seen_last_frame = {t.track_id for t in self.tracks if t.missed == 0}
        match([t for t in self.tracks if t.confirmed], high, self.match_iou)
        match([t for t in self.tracks if t.confirmed and t.track_id not in matched and t.track_id in seen_last_frame],
              low, LOW_SCORE_MATCH_IOU)
        match([t for t in self.tracks if not t.confirmed], [i for i in high if assigned[i] is None],
              TENTATIVE_MATCH_IOU)

        kept = []
        for track in self.tracks:
            if track.track_id not in matched:
                track.missed += 1
                if not track.confirmed:
                    self.discarded.append(track.track_id)
                    continue
                if track.missed > self.max_missed:
                    continue
            kept.append(track)
        for index in high:
            if assigned[index] is None and scores[index] >= self.new_track_score:
                track = MotionTrack(self._next_id, KalmanBox(boxes[index]), confirmed=self.confirm_hits <= 1)
                self._next_id += 1
                kept.append(track)
                assigned[index] = track.track_id
        self.tracks = kept
        return assigned


@dataclass
class Observation:
    """One detected face in one frame, as the tracker saw it."""

    frame_index: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    sharpness: float = 0.0  # Laplacian variance of the aligned input crop (filled by the pipeline)

    @property
    def size(self) -> float:
        """The box's shorter side, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Track:
    track_id: int
    observations: list[Observation] = field(default_factory=list)
    reference: np.ndarray | None = None  # mean SFace embedding (normalised)
    reference_count: int = 0
    shot: int = 0  # index of the shot (between cuts) the track lies in
    # Face evidence samples: SFace feature length, brightness and contrast of the crop's centre.
    evidence: list[tuple[float, float, float]] = field(default_factory=list)

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


@dataclass
class DroppedTrack:
    """A track (or a lone untracked detection) that no real face would produce, and why it was dropped."""

    first_frame: int
    last_frame: int
    detections: int
    best_score: float
    largest_face: float  # px, the shorter box side of its largest detection
    reason: str
    tracked: bool = True  # False: a lone detection that joined no track (an untracked face)

    def as_dict(self) -> dict:
        return {"first_frame": self.first_frame, "last_frame": self.last_frame, "detections": self.detections,
                "best_score": round(self.best_score, 4), "largest_face": round(self.largest_face, 1),
                "reason": self.reason, "tracked": self.tracked}


def required_detections(min_track_detections: int, detection_frames: int) -> int:
    """Detections a track needs in a clip of `detection_frames`: the setting, but at most one per ten
    detection frames, so every face of a single image or a clip of a few frames is kept."""
    return max(1, min(min_track_detections, detection_frames // 10))


def _expanded_boxes_touch(a: np.ndarray, b: np.ndarray, grow: float) -> bool:
    """True when two faces are near enough that a tracker could confuse them."""
    def expand(box: np.ndarray) -> np.ndarray:
        w, h = box[2] - box[0], box[3] - box[1]
        return np.array([box[0] - grow * w, box[1] - grow * h, box[2] + grow * w, box[3] + grow * h])
    a, b = expand(a), expand(b)
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def _frame_gap(a: "Track", b: "Track") -> int:
    """The fewest frames between a detection of `a` and one of `b`; 0 when they share a frame."""
    frames_a = np.array([o.frame_index for o in a.observations])
    frames_b = np.array([o.frame_index for o in b.observations])
    at = np.clip(np.searchsorted(frames_a, frames_b), 1, len(frames_a) - 1) if len(frames_a) > 1 else np.zeros(len(frames_b), int)
    nearest = np.minimum(np.abs(frames_a[at] - frames_b), np.abs(frames_a[np.maximum(at - 1, 0)] - frames_b))
    return int(nearest.min())


def _hands_over(earlier: Track, later: Track) -> bool:
    """Does one track take over the other's face: same shot, few shared frames, and a face of each, at most
    HANDOVER_FRAMES apart, overlapping by HANDOVER_IOU?"""
    if earlier.shot != later.shot or later.first_frame < earlier.first_frame:
        return False
    frames_a = np.array([o.frame_index for o in earlier.observations])
    frames_b = np.array([o.frame_index for o in later.observations])
    if len(np.intersect1d(frames_a, frames_b)) > HANDOVER_SHARED:
        return False
    for b in later.observations:
        position = int(np.searchsorted(frames_a, b.frame_index))
        for a_index in range(max(0, position - 2), min(len(frames_a), position + 2)):
            a = earlier.observations[a_index]
            if abs(a.frame_index - b.frame_index) <= HANDOVER_FRAMES and box_iou(a.box, b.box)[0, 0] >= HANDOVER_IOU:
                return True
    return False


def _reappears_in_place(earlier: Track, later: Track, max_gap_frames: int) -> bool:
    """Does `later` start where `earlier` ended (see REJOIN_SECONDS): same shot, after it within max_gap_frames,
    its first face near earlier's last one and of a similar size?"""
    if earlier.shot != later.shot or not 0 < later.first_frame - earlier.last_frame <= max_gap_frames:
        return False
    left, back = earlier.observations[-1].box, later.observations[0].box
    sides = [max(box[2] - box[0], box[3] - box[1]) for box in (left, back)]  # a face cut by the frame edge keeps one
    if max(sides) > REJOIN_SIZE_RATIO * min(sides):
        return False
    distance = np.hypot((left[0] + left[2] - back[0] - back[2]) / 2, (left[1] + left[3] - back[1] - back[3]) / 2)
    return bool(distance <= REJOIN_DISTANCE * max(sides))


def _covers(host: Track, track: Track) -> bool:
    """Does `track` lie within `host`'s time span, each of its faces overlapping host's face of the same or
    a neighbouring frame? (On a hard face, such as a profile, the detector may box the face one way in one
    frame and another way in the next: two alternating tracks of one face.)"""
    if host.shot != track.shot or not host.first_frame <= track.first_frame <= track.last_frame <= host.last_frame:
        return False
    frames = np.array([o.frame_index for o in host.observations])
    for observation in track.observations:
        nearest = int(np.argmin(np.abs(frames - observation.frame_index)))
        if abs(int(frames[nearest]) - observation.frame_index) > DUPLICATE_MAX_FRAMES:
            return False
        box = host.observations[nearest].box
        x1, y1 = max(box[0], observation.box[0]), max(box[1], observation.box[1])
        x2, y2 = min(box[2], observation.box[2]), min(box[3], observation.box[3])
        shared = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        smaller = min(float(np.prod(box[2:] - box[:2])), float(np.prod(observation.box[2:] - observation.box[:2])))
        if shared < DUPLICATE_OVERLAP * max(smaller, 1e-6):
            return False
    return True


class FaceTracker:
    """Feed it the faces of each detection frame in order; read `tracks` (and `untracked`) at the end."""

    def __init__(self, settings, fps: float, detect_stride: int, embedder=None):
        self.settings = settings
        # The association counts in detection frames (it sees no others); the buffer is set in frames.
        self.association = ByteAssociation(
            high_score=settings.track_activation_threshold,
            new_track_score=min(1.0, settings.track_activation_threshold + NEW_TRACK_MARGIN),
            match_iou=1.0 - settings.minimum_matching_threshold,
            max_missed=max(1, -(-settings.lost_track_buffer // detect_stride)),
            confirm_hits=settings.minimum_consecutive_frames,
        )
        self.embedder = embedder if settings.use_identity else None
        self.reid_max_gap_frames = int(round(settings.reid_max_gap_seconds * max(fps, 1.0)))
        self.rejoin_max_gap_frames = int(round(REJOIN_SECONDS * max(fps, 1.0)))
        self.label_of: dict[int, int] = {}  # association track id -> our stable track id
        self.tracks: dict[int, Track] = {}
        self.untracked: list[Observation] = []  # weaker than track_activation_threshold, no track
        self.dropped: list[DroppedTrack] = []  # filled by finish()
        self.swaps = 0
        self.merges = 0
        self._touching: set[frozenset[int]] = set()  # association id pairs overlapping at the last detection frame
        self._next_label = 1
        self._updates = 0
        self._discarded_seen = 0
        # An embedder that cannot judge a crop (a recogniser without SFace's feature length) leaves it off.
        self.verify = settings.verify_faces and hasattr(self.embedder, "embed_faces_with_evidence")
        self.cuts: list[int] = []  # first frame of each shot after the first

    def cut(self, frame_index: int) -> None:
        """A shot cut before `frame_index`: every face on screen ends; nothing after joins anything before."""
        self.cuts.append(frame_index)
        for tracker_id in [t.track_id for t in self.association.tracks]:
            self.label_of.pop(tracker_id, None)
        self.association.tracks = []
        self._touching = set()

    def update(self, frame_index: int, image: np.ndarray, faces: list[Face]) -> list[tuple[int | None, Observation]]:
        self._updates += 1
        observations = [Observation(frame_index, f.box.astype(np.float32), f.landmarks.astype(np.float32), f.score)
                        for f in faces]
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        scores = np.array([f.score for f in faces], dtype=np.float32)
        # The detector flags candidates below its own threshold `weak` (when asked for them): they may extend
        # a track through a few blurred frames but never start one, whatever track_activation_threshold says.
        weak = np.array([getattr(f, "weak", False) for f in faces], dtype=bool)
        assigned = self.association.update(boxes, scores, weak)
        self._discard_unconfirmed()
        pairs = [(track_id, index) for index, track_id in enumerate(assigned) if track_id is not None]
        for tracker_id, _ in pairs:
            if tracker_id not in self.label_of:
                self.label_of[tracker_id] = self._next_label
                self._next_label += 1
        if self.embedder is not None:
            self._guard_identities(image, observations, pairs)
        result: list[tuple[int | None, Observation]] = []
        for tracker_id, face_index in pairs:
            label = self.label_of[tracker_id]
            self.tracks.setdefault(label, Track(label, shot=len(self.cuts))).observations.append(observations[face_index])
            result.append((label, observations[face_index]))
        for face_index, observation in enumerate(observations):
            if assigned[face_index] is None and not weak[face_index]:  # a weak one alone is no face at all
                self.untracked.append(observation)
                result.append((None, observation))
        if self.embedder is not None:
            self._sample_references(image, observations, pairs)
        return result

    def _discard_unconfirmed(self) -> None:
        """Tentative tracks (minimum_consecutive_frames > 1) that lost their face before confirmation."""
        for tracker_id in self.association.discarded[self._discarded_seen:]:
            track = self.tracks.pop(self.label_of.pop(tracker_id), None)
            if track is not None and track.observations:
                self.dropped.append(self._dropped(track.observations, "unconfirmed: fewer than "
                                                  f"{self.settings.minimum_consecutive_frames} detections in a row"))
        self._discarded_seen = len(self.association.discarded)

    def _crowded(self, observations, pairs, grow: float) -> set[int]:
        """The faces that another face of comparable size (CONFUSABLE_SIZE_RATIO) comes near."""
        crowded = set()
        for i, (_, a) in enumerate(pairs):
            for _, b in pairs[i + 1:]:
                sizes = sorted((observations[a].size, observations[b].size))
                if sizes[1] <= CONFUSABLE_SIZE_RATIO * sizes[0] \
                        and _expanded_boxes_touch(observations[a].box, observations[b].box, grow):
                    crowded.update((a, b))
        return crowded

    def _sample_references(self, image, observations, pairs) -> None:
        """Every REFERENCE_EVERY detections of a track: a face-evidence sample (verify_faces), and an identity
        sample if the face stands apart, so a reference never mixes two people. A track without a reference yet
        takes its first one at the first detection where its face stands apart, wherever that falls."""
        crowded = self._crowded(observations, pairs, SAMPLE_CLEARANCE)
        wanted = []
        for tracker_id, face_index in pairs:
            track = self.tracks[self.label_of[tracker_id]]
            on_schedule = (len(track.observations) - 1) % REFERENCE_EVERY == 0
            reference_due = face_index not in crowded and track.reference_count < REFERENCE_SAMPLES \
                and (on_schedule or track.reference is None)
            evidence_due = on_schedule and self.verify and len(track.evidence) < EVIDENCE_SAMPLES
            if reference_due or evidence_due:
                wanted.append((track, face_index, reference_due, evidence_due))
        if not wanted:
            return
        landmarks = [observations[i].landmarks for _, i, _, _ in wanted]
        if self.verify:
            embeddings, evidence = self.embedder.embed_faces_with_evidence(image, landmarks)
        else:
            embeddings, evidence = self.embedder.embed_faces(image, landmarks), [None] * len(wanted)
        for (track, _, reference_due, evidence_due), embedding, sample in zip(wanted, embeddings, evidence):
            if reference_due:
                track.add_reference(embedding)
            if evidence_due:
                track.evidence.append(tuple(float(v) for v in sample))

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
        """Merge re-appearing identities, drop tracks no real face would produce, renumber 1..N in order of
        appearance, return the tracks. Dropped tracks are listed in `dropped`, dropped lone detections leave
        `untracked`."""
        tracks = sorted((t for t in self.tracks.values() if t.observations), key=lambda t: t.first_frame)
        for track in tracks:
            track.observations.sort(key=lambda o: o.frame_index)
        if self.embedder is not None and self.reid_max_gap_frames > 0:
            tracks = self._merge_reappearing(tracks)
        tracks = self._join_handovers(tracks)
        tracks = self._rejoin_in_place(tracks)
        tracks = self._drop_duplicates(tracks)
        kept = []
        for track in tracks:
            reason = self._implausible(track.observations) or self._not_a_face(track)
            if reason is None:
                kept.append(track)
            else:
                self.dropped.append(self._dropped(track.observations, reason))
        untracked = []
        for observation in self.untracked:  # a lone detection is judged as a track of one
            reason = self._implausible([observation])
            if reason is None:
                untracked.append(observation)
            else:
                self.dropped.append(self._dropped([observation], reason, tracked=False))
        self.untracked = untracked
        self.dropped.sort(key=lambda d: (d.first_frame, d.last_frame))
        if self.dropped:
            log.info("dropped %d track(s) no real face would produce: %s", len(self.dropped),
                     "; ".join(f"frames {d.first_frame}-{d.last_frame}: {d.reason}" for d in self.dropped[:5])
                     + ("; ..." if len(self.dropped) > 5 else ""))
        for number, track in enumerate(sorted(kept, key=lambda t: t.first_frame), start=1):
            track.track_id = number
        return sorted(kept, key=lambda t: t.track_id)

    def _implausible(self, observations: list[Observation]) -> str | None:
        """Why these detections are not a real face (None: they may be). Each rule alone suffices."""
        settings = self.settings
        needed = required_detections(settings.min_track_detections, self._updates)
        if len(observations) < needed:
            return f"{len(observations)} detection(s), fewer than {needed}"
        best = max(o.score for o in observations)
        if best < settings.min_track_score:
            return f"best score {best:.2f} below {settings.min_track_score:g}"
        largest = max(o.size for o in observations)
        if largest < settings.min_track_face_size:
            return f"largest face {largest:.0f} px, below {settings.min_track_face_size} px"
        return None

    def _not_a_face(self, track: Track) -> str | None:
        """Why the track's sampled crops show no face (None: they show one, or verification is off)."""
        if not self.verify or not track.evidence:
            return None
        length, brightness, contrast = np.median(np.array(track.evidence), axis=0)
        score = float(np.median([o.score for o in track.observations]))
        largest = max(o.size for o in track.observations)
        sharpness = float(np.median([o.sharpness for o in track.observations]))
        if brightness < DARK_BRIGHTNESS and contrast < FLAT_CONTRAST:
            return f"too dark and flat to show a face (brightness {brightness:.0f}, contrast {contrast:.1f})"
        if length < WEAK_FEATURE_LENGTH and score < WEAK_SCORE and largest < WEAK_MAX_SIZE:
            return (f"no clear face: SFace feature length {length:.1f} and median detector score {score:.2f}, "
                    f"face at most {largest:.0f} px")
        if length < BLURRED_FEATURE_LENGTH and sharpness < BLURRED_SHARPNESS and largest < BLURRED_MAX_SIZE:
            return (f"defocused background face: SFace feature length {length:.1f}, sharpness {sharpness:.1f}, "
                    f"face at most {largest:.0f} px")
        return None

    def _join_handovers(self, tracks: list[Track]) -> list[Track]:
        """Join tracks where one face's track stops and another starts on the same face (see HANDOVER_IOU)."""
        joined = True
        while joined:
            joined = False
            for earlier in tracks:
                later = next((t for t in tracks if t is not earlier and _hands_over(earlier, t)), None)
                if later is None:
                    continue
                if earlier.reference is not None and later.reference is not None \
                        and float(earlier.reference @ later.reference) < HANDOVER_MIN_SIMILARITY:
                    continue
                self._join(tracks, earlier, later)
                joined = True
                break
        return tracks

    def _rejoin_in_place(self, tracks: list[Track]) -> list[Track]:
        """Join tracks where a face comes back where it left, identities agreeing (see REJOIN_SECONDS); the
        most similar pair first."""
        while True:
            pairs = [(float(earlier.reference @ later.reference), earlier, later)
                     for earlier in tracks for later in tracks
                     if later is not earlier and earlier.reference is not None and later.reference is not None
                     and _reappears_in_place(earlier, later, self.rejoin_max_gap_frames)]
            pairs = [pair for pair in pairs if pair[0] >= REJOIN_MIN_SIMILARITY]
            if not pairs:
                return tracks
            _, earlier, later = max(pairs, key=lambda pair: pair[0])
            self._join(tracks, earlier, later)

    def _join(self, tracks: list[Track], earlier: Track, later: Track) -> None:
        """Make `later` part of `earlier` (one face, two tracks): its detections, evidence and identity."""
        frames = {o.frame_index for o in earlier.observations}
        earlier.observations.extend(o for o in later.observations if o.frame_index not in frames)
        earlier.observations.sort(key=lambda o: o.frame_index)
        earlier.evidence.extend(later.evidence)
        if later.reference is not None:
            for _ in range(later.reference_count):
                earlier.add_reference(later.reference)
        tracks.remove(later)
        self.merges += 1

    def _drop_duplicates(self, tracks: list[Track]) -> list[Track]:
        """A track seen only while a longer track covers the same face (a second box on one head, such as a
        profile's two landmark guesses) is the same face twice: drop the shorter."""
        kept = []
        for track in sorted(tracks, key=lambda t: (t.first_frame - t.last_frame, -len(t.observations))):
            host = next((other for other in kept if _covers(other, track)), None)
            if host is None:
                kept.append(track)
            else:
                self.dropped.append(self._dropped(track.observations, "duplicate: the same face as a longer track"))
        return sorted(kept, key=lambda t: t.first_frame)

    @staticmethod
    def _dropped(observations: list[Observation], reason: str, tracked: bool = True) -> DroppedTrack:
        return DroppedTrack(observations[0].frame_index, observations[-1].frame_index, len(observations),
                            float(max(o.score for o in observations)), max(o.size for o in observations), reason,
                            tracked)

    def _merge_reappearing(self, tracks: list[Track]) -> list[Track]:
        merged = True
        while merged:
            merged = False
            best = None
            for earlier in tracks:
                for later in tracks:
                    if (later is earlier or earlier.reference is None or later.reference is None
                            or later.shot != earlier.shot):  # a cut starts new people
                        continue
                    # Frames between their nearest detections (0: they share a frame, two faces at once). Not
                    # just later.first - earlier.last: once A(frames 0, 2) is merged from A(0) and C(2), B(1)
                    # lies inside A's span and must still join it, or one face becomes two tracks.
                    gap = _frame_gap(earlier, later)
                    if later.first_frame < earlier.first_frame or not 0 < gap <= self.reid_max_gap_frames:
                        continue
                    similarity = float(earlier.reference @ later.reference)
                    if similarity >= MERGE_SIMILARITY and (best is None or similarity > best[0]):
                        best = (similarity, earlier, later)
            if best is not None:
                _, earlier, later = best
                self._join(tracks, earlier, later)
                merged = True
        return tracks
