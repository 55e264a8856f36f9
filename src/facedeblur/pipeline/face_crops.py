"""Align -> restore -> paste for a batch of faces: the one core that `restore` and `process` share.

A face larger than the model's working size must not lose detail by being shrunk to it and enlarged
back. How a large face is handled is `restorer.large_faces`:

- ``native``: the network (fully convolutional) runs on the native-resolution crop directly; best on
  moderately damaged whole photos, weakest on blurred video faces twice the working size (their blur is larger
  than any the model trained on).
- ``correction``: the model restores the face at its working size; only its *correction*
  (restored minus input, a smooth image) is warped back and added to the frame's own pixels, which are
  never resampled, so every native detail survives and the model's deblurring and cleaning still apply.
- ``resize``: restore at the working size and enlarge the result (loses detail; kept as the plain baseline
  the other modes are measured against).
- ``adaptive`` (default; best or equal on every video case, within 0.07 dB of the best on damaged photos):
  between the two: the correction is added, and the face's own detail finer than the
  working size (what ``resize`` drops and ``correction`` keeps) is kept in the share `native_detail_weight`
  gives: a sharp face keeps it, a noisy or blocky face (where that detail is mostly damage) loses it.

Measured on the talking-head video benchmark and whole photos (docs/BENCHMARKS.md). Faces at or below
the working size are handled the same way in every mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..defaults import DEFAULT_LARGE_FACES, DEFAULT_TEMPORAL_WINDOW, LARGE_FACE_MODES, LargeFaceMode  # noqa: F401
from .align import estimate_alignment, warp_to_crop
from .paste import feather_mask, paste_back

if TYPE_CHECKING:
    from .restore import FaceRestorer
# Native crops are capped (a 4K close-up would otherwise cost a 2000 px network pass): beyond this side
# the face is restored at this size, still far above the working size.
MAX_NATIVE_SIDE = 512
# Crop sides are multiples of this: the network halves the resolution 4 times (pixel unshuffle + 3 levels).
SIDE_MULTIPLE = 16
# `adaptive`: the model's verdict on the native detail is (fraction of its finest detail the model kept) ** this.
# Above 1 because that detail is finer than anything the model saw: on a damaged face it is mostly damage.
DETAIL_KEPT_EXPONENT = 3.0
# A Gaussian's standard deviation per median absolute value of its zero-mean samples (1 / 0.6745): robust
# noise estimates read the noise off the median, which the few strong edges of a face barely move.
MAD_TO_SIGMA = 1.4826


@dataclass
class FaceCrop:
    matrix: np.ndarray  # image pixels -> pixels of `crop` (what is pasted back)
    crop: np.ndarray  # the original face at paste resolution: native for a large face, else the working size
    working: np.ndarray  # what the network sees (the crop, shrunk for `correction`, or temporally fused)
    add_correction: bool = False  # paste crop + enlarged (restored - shrunk crop) instead of the output
    adaptive_detail: bool = False  # scale the crop's detail finer than the working size (see `adaptive`)

    def with_working(self, working: np.ndarray) -> "FaceCrop":
        return FaceCrop(self.matrix, self.crop, working, self.add_correction, self.adaptive_detail)


@dataclass
class RestoredCrop:
    face: FaceCrop
    restored: np.ndarray  # same size as face.crop
    correction: np.ndarray | None = None  # for add_correction faces: restored minus input at the working size
    # For add_correction faces: the share of the frame's own finest detail (what resampling the face there
    # and back would smooth away) that pasting keeps; 1 keeps the frame's pixels exactly.
    native_detail: float = 1.0

    @property
    def matrix(self) -> np.ndarray:
        return self.face.matrix

    @property
    def original(self) -> np.ndarray:
        return self.face.crop


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper (a standard no-reference measure)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def alignment_scale(matrix: np.ndarray) -> float:
    """Crop pixels per image pixel (below 1: the face is larger in the image than in the crop)."""
    return float(math.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def native_side(crop_size: int, scale: float) -> int:
    side = crop_size / max(scale, 1e-6)
    return int(min(MAX_NATIVE_SIDE, max(crop_size, math.ceil(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)))


def cut_face(image: np.ndarray, landmarks: np.ndarray, crop_size: int, template: np.ndarray,
             large_faces: LargeFaceMode = DEFAULT_LARGE_FACES) -> FaceCrop:
    matrix = estimate_alignment(landmarks, crop_size, template)
    side = native_side(crop_size, alignment_scale(matrix))
    if large_faces == "resize" or side == crop_size:
        crop = warp_to_crop(image, matrix, crop_size)
        return FaceCrop(matrix, crop, crop)
    native_matrix = (matrix * (side / crop_size)).astype(np.float32)
    native = warp_to_crop(image, native_matrix, side)
    if large_faces == "native":
        return FaceCrop(native_matrix, native, native)
    return FaceCrop(native_matrix, native, shrink(native, crop_size), add_correction=True,
                    adaptive_detail=large_faces == "adaptive")


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def restore_crops(restorer: "FaceRestorer", faces: list[FaceCrop]) -> list[RestoredCrop]:
    """Restore every face, batching faces of the same working size together."""
    return [finish_crop(face, result) for face, result in zip(faces, restore_working(restorer, faces))]


def restore_working(restorer: "FaceRestorer", faces: list[FaceCrop]) -> list[np.ndarray]:
    """The network's output for every face's working crop (what `finish_crop` turns into the pasted face),
    batching faces of the same working size together."""
    by_size: dict[int, list[int]] = {}
    for index, face in enumerate(faces):
        by_size.setdefault(face.working.shape[0], []).append(index)
    restored: list[np.ndarray] = [np.empty(0)] * len(faces)
    for indices in by_size.values():
        for index, result in zip(indices, restorer.restore_batch([faces[i].working for i in indices])):
            restored[index] = result
    return restored


def finish_crop(face: FaceCrop, restored_working: np.ndarray) -> RestoredCrop:
    """The face to paste: the working-size output itself, or for a large face its correction added at native
    resolution (see the module's `correction` and `adaptive`)."""
    if not face.add_correction:
        return RestoredCrop(face, restored_working)
    native_size = face.crop.shape[1::-1]  # (width, height): square for a detected face, any for `restore --aligned`
    # Against the original (not a fused) working crop: what fusion cleaned is part of the correction.
    shrunk = shrink(face.crop, restored_working.shape[0])
    correction = restored_working.astype(np.float32) - shrunk.astype(np.float32)
    enlarged = cv2.resize(correction, native_size, interpolation=cv2.INTER_CUBIC)
    if face.adaptive_detail:
        crop_f = face.crop.astype(np.float32)
        fine = crop_f - cv2.resize(shrunk, native_size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        kept = native_detail_weight(fine, shrunk, restored_working)
        enlarged -= (1.0 - kept) * fine
        restored = np.clip(np.rint(crop_f + enlarged), 0, 255).astype(np.uint8)
        # Pasted at native resolution: after the detail step the correction holds native-resolution detail.
        return RestoredCrop(face, restored, enlarged, native_detail=kept)
    restored = np.clip(np.rint(face.crop.astype(np.float32) + enlarged), 0, 255).astype(np.uint8)
    return RestoredCrop(face, restored, correction)


def native_detail_weight(fine: np.ndarray, shrunk: np.ndarray, restored_working: np.ndarray) -> float:
    """`adaptive`: the share (0..1) of a large face's native detail finer than the working size (`fine`, crop
    minus its shrunk-and-enlarged self) to keep. Two verdicts, multiplied:

    - the model's: how much of the finest detail it can see it kept (`finest_detail_kept`), raised to
      DETAIL_KEPT_EXPONENT: a deblocked or pixelated face loses the band;
    - the band's own: its Wiener gain 1 - noise / energy. A face's detail in that band is sparse (edges of
      eyes, lips, hair) while noise fills all of it, so the band's median absolute value measures the noise
      (the MAD estimate) and its mean square the whole. The model alone misses noise: shrinking to the
      working size averages most of it away, so the model sees a cleaner face than the band holds.
    """
    # every other pixel each way: the two statistics barely move, at a quarter of the cost
    grey_fine = np.abs(cv2.cvtColor(np.ascontiguousarray(fine[::2, ::2]), cv2.COLOR_BGR2GRAY))
    band_noise = (MAD_TO_SIGMA * float(np.median(grey_fine))) ** 2
    band_energy = float(np.mean(grey_fine ** 2))
    signal_share = float(np.clip(1.0 - band_noise / max(band_energy, 1e-6), 0.0, 1.0))
    return finest_detail_kept(shrunk, restored_working) ** DETAIL_KEPT_EXPONENT * signal_share


def finest_detail_kept(before: np.ndarray, after: np.ndarray) -> float:
    """How much of the finest detail at the working size the model kept (0..1): the ratio of the
    high-pass energy after restoration to before. A denoised or deblocked face scores low, a sharp face
    the model leaves alone near 1, a deblurred face (detail added) is capped at 1."""
    def high_pass_energy(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float(np.mean((grey - cv2.GaussianBlur(grey, (0, 0), 1.0)) ** 2))
    return float(np.clip(np.sqrt(high_pass_energy(after) / max(high_pass_energy(before), 1e-6)), 0.0, 1.0))


class FacePaster:
    """Pastes restored faces into a frame in place; feather masks are made once per crop side."""

    def __init__(self):
        self._masks: dict[int, np.ndarray] = {}

    def _mask(self, side: int) -> np.ndarray:
        if side not in self._masks:
            self._masks[side] = feather_mask(side)
        return self._masks[side]

    def paste(self, frame: np.ndarray, face: RestoredCrop) -> None:
        if face.correction is not None:
            # Only the correction is resampled into the frame; the face's own pixels are not, so no native
            # detail is lost on the way back, except the share of the frame's finest detail that is damage
            # (native_detail below 1): that share is replaced by the face's own crop, resampled there and
            # back, which smooths it away as the crop's own band was.
            side = face.correction.shape[0]
            correction_matrix = (face.matrix * (side / face.restored.shape[0])).astype(np.float32)
            replaced = 1.0 - face.native_detail
            pasted = (cv2.addWeighted(face.correction, 1.0, face.original, replaced, 0.0, dtype=cv2.CV_32F)
                      if replaced else face.correction)
            paste_back(frame, pasted, correction_matrix, self._mask(side), replaced=replaced)
        else:
            paste_back(frame, face.restored, face.matrix, self._mask(face.restored.shape[0]))


def restore_any_size_crop(restorer: "FaceRestorer", image: np.ndarray,
                          large_faces: LargeFaceMode = DEFAULT_LARGE_FACES) -> np.ndarray:
    """Restore one roughly centred face crop of any size (`restore --aligned`), with the same rule for
    crops larger than the working size as detected faces get."""
    height, width = image.shape[:2]
    size = restorer.crop_size
    if max(height, width) <= size or large_faces == "resize":
        return restorer.restore_any_size(image)
    if large_faces == "native":
        padded_h = math.ceil(height / SIDE_MULTIPLE) * SIDE_MULTIPLE
        padded_w = math.ceil(width / SIDE_MULTIPLE) * SIDE_MULTIPLE
        padded = cv2.copyMakeBorder(image, 0, padded_h - height, 0, padded_w - width, cv2.BORDER_REFLECT101)
        return restorer.restore_batch([padded])[0][:height, :width]
    working = shrink(image, size)
    face = FaceCrop(np.eye(2, 3, dtype=np.float32), image, working, add_correction=True,
                    adaptive_detail=large_faces == "adaptive")
    return finish_crop(face, restorer.restore_batch([working])[0]).restored
