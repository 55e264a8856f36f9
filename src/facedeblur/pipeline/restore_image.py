"""One photo through the runtime path: detect every face, align, restore in one batch, paste back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import Face, FaceDetector
from .face_crops import DEFAULT_LARGE_FACES, FacePaster, LargeFaceMode, cut_face, restore_crops
from .restore import FaceRestorer


@dataclass
class RestoredFace:
    face: Face
    matrix: np.ndarray
    original_crop: np.ndarray
    restored_crop: np.ndarray


def restore_faces_in_image(image: np.ndarray, detector: FaceDetector, restorer: FaceRestorer,
                           faces: list[Face] | None = None,
                           large_faces: LargeFaceMode = DEFAULT_LARGE_FACES) -> tuple[np.ndarray, list[RestoredFace]]:
    faces = detector.detect(image) if faces is None else faces
    if not faces:
        return image.copy(), []
    crops = [cut_face(image, f.landmarks, restorer.crop_size, restorer.info.template, large_faces) for f in faces]
    restored = restore_crops(restorer, crops)
    paster = FacePaster()
    output = image.copy()
    for done in restored:
        paster.paste(output, done)
    return output, [RestoredFace(f, r.matrix, r.original, r.restored) for f, r in zip(faces, restored)]
