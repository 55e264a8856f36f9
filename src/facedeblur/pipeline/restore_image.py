"""One photo through the runtime path: detect every face, align, restore in one batch, paste back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import estimate_alignment, warp_to_crop
from .detect import Face, FaceDetector
from .paste import feather_mask, paste_back
from .restore import FaceRestorer


@dataclass
class RestoredFace:
    face: Face
    matrix: np.ndarray
    original_crop: np.ndarray
    restored_crop: np.ndarray


def restore_faces_in_image(image: np.ndarray, detector: FaceDetector, restorer: FaceRestorer,
                           faces: list[Face] | None = None) -> tuple[np.ndarray, list[RestoredFace]]:
    faces = detector.detect(image) if faces is None else faces
    if not faces:
        return image.copy(), []
    size = restorer.crop_size
    matrices = [estimate_alignment(f.landmarks, size, restorer.info.template) for f in faces]
    crops = [warp_to_crop(image, m, size) for m in matrices]
    restored = restorer.restore_batch(crops)
    mask = feather_mask(size)
    output = image
    for matrix, crop in zip(matrices, restored):
        output = paste_back(output, crop, matrix, mask)
    return output, [RestoredFace(f, m, c, r) for f, m, c, r in zip(faces, matrices, crops, restored)]
