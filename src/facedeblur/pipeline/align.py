"""Alignment: a similarity transform from the 5 detected landmarks to one canonical face template.

The template is given in fractions of the crop side, so the working size is a parameter (the model's
metadata carries it) and never hard-wired. It places the face at about half the crop's width, like
FFHQ-style crops, so `restore --aligned` inputs and detected faces look the same to the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .detect import Face

# Eye (image left), eye (image right), nose tip, mouth corner (image left), mouth corner (image right).
FACE_TEMPLATE = np.array(
    [[0.378, 0.469], [0.622, 0.469], [0.500, 0.610], [0.395, 0.725], [0.605, 0.725]], dtype=np.float32
)
DEFAULT_CROP_SIZE = 128
# A clean photo's face is a training target or an evaluation reference only when its eyes are at least this
# fraction of the template's eye distance apart: a smaller face is enlarged to fill the crop, and the soft
# result would teach (or score against) blur.
MIN_EYE_RATIO = 0.8
NO_FACE = "no face"
FACE_TOO_SMALL = "face too small"


def template_points(crop_size: int, template: np.ndarray = FACE_TEMPLATE) -> np.ndarray:
    return np.asarray(template, dtype=np.float32) * crop_size


def estimate_alignment(landmarks: np.ndarray, crop_size: int, template: np.ndarray = FACE_TEMPLATE) -> np.ndarray:
    """2x3 matrix mapping image pixels to crop pixels (rotation, uniform scale, translation only)."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(landmarks, dtype=np.float32), template_points(crop_size, template), method=cv2.LMEDS
    )
    if matrix is None:  # degenerate landmarks (all on one point); fall back to the least-squares fit
        matrix = _least_squares_similarity(np.asarray(landmarks, np.float32), template_points(crop_size, template))
    return matrix.astype(np.float32)


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    denom = max(float((s ** 2).sum()), 1e-6)
    a = float((s * d).sum()) / denom
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / denom
    rot = np.array([[a, -b], [b, a]], dtype=np.float32)
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, crop_size: int,
                 border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """Cut the aligned crop; reflection fills any part of the crop that lies outside the image."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    # Shrinking a big face: area-like interpolation avoids aliasing; enlarging a small one: bicubic.
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    if scale < 0.5:
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5 / scale)
        return cv2.warpAffine(blurred, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=border)
    return cv2.warpAffine(image, matrix, (crop_size, crop_size), flags=flags, borderMode=border)


def invert_alignment(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix).astype(np.float32)


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face a clean photo is about: the largest box (bystanders and reflections are smaller)."""
    return max(faces, key=lambda face: face.width * face.height, default=None)


def align_largest_face(image: np.ndarray, faces: Sequence[Face], crop_size: int,
                       template: np.ndarray = FACE_TEMPLATE,
                       min_eye_ratio: float = MIN_EYE_RATIO) -> tuple[np.ndarray | None, str]:
    """The aligned crop of a clean photo's largest face, as training and evaluation both take it: (crop, "ok"),
    or (None, NO_FACE / FACE_TOO_SMALL) when there is no face or its eyes are too close for the crop."""
    face = largest_face(faces)
    if face is None:
        return None, NO_FACE
    eye_distance = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    template_eyes = float(np.linalg.norm(np.diff(template_points(crop_size, template)[:2], axis=0)))
    if eye_distance < template_eyes * min_eye_ratio:
        return None, FACE_TOO_SMALL
    return warp_to_crop(image, estimate_alignment(face.landmarks, crop_size, template), crop_size), "ok"
