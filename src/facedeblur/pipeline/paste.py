"""Paste-back: put a restored crop into the frame with a feathered mask, touching nothing outside the face."""
from __future__ import annotations

import cv2
import numpy as np

from .align import invert_alignment


def feather_mask(crop_size: int, margin: float = 0.12) -> np.ndarray:
    """1 in the middle of the crop, falling smoothly to 0 at its edges (no visible seam)."""
    inner = max(1, int(round(crop_size * margin)))
    mask = np.zeros((crop_size, crop_size), np.float32)
    mask[inner:-inner, inner:-inner] = 1.0
    sigma = inner / 2.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma)
    mask[:2, :] = mask[-2:, :] = 0
    mask[:, :2] = mask[:, -2:] = 0
    return mask


def paste_back(frame: np.ndarray, restored_crop: np.ndarray, matrix: np.ndarray,
               mask: np.ndarray | None = None, strength: float = 1.0, replaced: float = 1.0) -> None:
    """Blend the restored crop into `frame`, in place, through the inverse alignment (a frame with ten
    faces is copied once by its caller, not once per face).

    `replaced` is the share of the frame's own pixels under the face that the crop replaces. 1 pastes an
    image. 0 adds a correction (float, signed) to the frame's own pixels, which are then never resampled:
    the way a face larger than the crop keeps its native detail. In between, the crop is a correction plus
    that share of the face's own pixels, so that share of the frame is resampled (there and back) and the
    rest is kept as it is.
    Only the bounding box of the warped mask is touched, so pixels away from the face stay bit-identical.
    """
    crop_size = restored_crop.shape[0]
    mask = feather_mask(crop_size) if mask is None else mask
    inverse = invert_alignment(matrix)
    height, width = frame.shape[:2]
    corners = np.array([[0, 0, 1], [crop_size, 0, 1], [0, crop_size, 1], [crop_size, crop_size, 1]], np.float32)
    mapped = corners @ inverse.T
    x1, y1 = np.floor(mapped.min(0)).astype(int) - 1
    x2, y2 = np.ceil(mapped.max(0)).astype(int) + 1
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x2 <= x1 or y2 <= y1:
        return
    shifted = inverse.copy()
    shifted[:, 2] -= (x1, y1)
    size = (x2 - x1, y2 - y1)
    # Cubic: a large face pasted back from its native-size crop keeps its detail (bilinear softens it).
    warped = cv2.warpAffine(restored_crop, shifted, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if strength != 1.0:
        alpha *= strength
    region = frame[y1:y2, x1:x2]
    blended = region.astype(np.float32)
    warped = warped.astype(np.float32, copy=False)
    change = cv2.scaleAdd(blended, -replaced, warped) if replaced else warped
    change *= alpha[..., None]
    # Where alpha is 0 the change is exactly 0, so those pixels come back bit-identical: the whole box can
    # be written at once, without selecting the touched pixels.
    blended += change
    np.rint(blended, out=blended)
    np.clip(blended, 0, 255, out=blended)
    region[...] = blended
