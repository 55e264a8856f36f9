"""Temporal fusion: merge a face's neighbouring frames into it before it is restored.

In video the same face is seen many times with independent noise, compression and (often) blur. The
neighbours' crops are already aligned on the face by the track's smoothed landmarks; dense optical flow
(OpenCV's DIS, fast and robust on small crops) then aligns what landmarks cannot (mouth, blinks, small
head turns), and each neighbour pixel is weighted by how well it agrees with the reference frame, so
pixels that moved differently (or were occluded) are rejected rather than ghosted in: the align-and-merge
idea of burst photography (HDR+). Plain averaging of misaligned frames blurs the face; this does not.
`automatic_plan` (`temporal_window: auto`) merges only where that helps: into a noisy face, and into a
smeared one (little fine detail left: a CCTV chain, severe blur); a clean face gains next to nothing from
the merge, or loses detail where it moves.

Written by hand because no maintained library offers robust multi-frame merging of small crops; the
building blocks (DIS flow, remap, filters) are OpenCV's.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..defaults import AUTO_TEMPORAL_WINDOW
from .face_crops import MAD_TO_SIGMA, sharpness

# A neighbour pixel whose aligned value differs from the reference by about this many noise sigmas
# gets weight e^-0.5: small enough to reject motion and occlusion, large enough to average noise.
REJECTION_SIGMAS = 2.0
MIN_NOISE_SIGMA = 2.0  # grey levels; below this, compression noise and quantisation dominate
# Disagreement is judged on a small neighbourhood, not a single pixel, or noise itself looks like motion.
DISAGREEMENT_WINDOW = 5
# A neighbour that agrees with the reference over less than this fraction of the face (by mean weight)
# moved too much (a head turn, a different expression, a very different blur) to help: it is left out.
MIN_AGREEMENT = 0.6
# `temporal_window: auto` (automatic_plan), chosen on the video benchmark (docs/BENCHMARKS.md). Fusion averages
# noise away, so a face whose working crop is at least this noisy (estimate_noise_sigma, grey levels: clean,
# compressed and blurred faces measure 0.5-2, severe sensor noise 4-12) is fused over AUTO_TEMPORAL_WINDOW frames.
AUTO_NOISE_SIGMA = 3.0
# A smeared face is fused too: one whose working crop keeps less fine detail than this (`sharpness`, the
# Laplacian's variance; on the shared clips clean and mildly blurred faces measure 70-350, the real blurred
# pairs 120, a CCTV chain, severe shake, defocus or x4 resolution loss 11-20). Its estimated noise is near zero
# (the smear flattens the high-pass) while its neighbours differ from it by compression blocks and ringing of
# several grey levels, so their agreement is judged against a floor of SMEARED_NOISE_SIGMA, and over
# AUTO_SMEARED_WINDOW frames (3 lost 0.1 dB on severe shake, 2 lost 0.02; severe CCTV gains 0.2 dB either way).
# Any other face is left alone: on a moving one (the real blurred pairs) the merge cost 0.9 dB of detail, and
# aligning neighbours only to judge that would cost a fifth of `process`'s time.
AUTO_SMEARED_SHARPNESS = 40.0
SMEARED_NOISE_SIGMA = 5.0
AUTO_SMEARED_WINDOW = 2


@dataclass(frozen=True)
class FusionPlan:
    """How one face is fused: over `window` frames either side (0: not at all), judging each neighbour's
    agreement against the face's estimated noise, but never less than `min_noise_sigma` grey levels."""
    window: int
    min_noise_sigma: float = MIN_NOISE_SIGMA


NOT_FUSED = FusionPlan(0)


def estimate_noise_sigma(grey: np.ndarray, floor: float = MIN_NOISE_SIGMA) -> float:
    """Noise standard deviation of a grey image from the median absolute high-pass response (robust to
    edges, which are few next to the flat skin of a face), at least `floor`."""
    high_pass = grey.astype(np.float32) - cv2.blur(grey.astype(np.float32), (3, 3))
    # For white noise of sigma s, the 3x3 high-pass has std s*sqrt(8/9).
    return float(max(floor, MAD_TO_SIGMA * np.median(np.abs(high_pass)) / np.sqrt(8.0 / 9.0)))


def automatic_plan(crop: np.ndarray) -> FusionPlan:
    """`temporal_window: auto` for one face crop (uint8 BGR): fused where its noise or its smear lets the
    neighbours help (AUTO_NOISE_SIGMA, AUTO_SMEARED_SHARPNESS), else not (the check costs two filters)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if estimate_noise_sigma(grey) >= AUTO_NOISE_SIGMA:
        return FusionPlan(AUTO_TEMPORAL_WINDOW)
    if sharpness(grey) < AUTO_SMEARED_SHARPNESS:
        return FusionPlan(AUTO_SMEARED_WINDOW, SMEARED_NOISE_SIGMA)
    return NOT_FUSED


class TemporalFuser:
    def __init__(self):
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _grid(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of a crop of this size (crops of a track keep one size: made once)."""
        if (height, width) not in self._grids:
            self._grids[(height, width)] = np.meshgrid(np.arange(width, dtype=np.float32),
                                                       np.arange(height, dtype=np.float32))
        return self._grids[(height, width)]

    def fuse(self, reference: np.ndarray, neighbours: list[np.ndarray], merged: list[int] | None = None,
             min_noise_sigma: float = MIN_NOISE_SIGMA) -> np.ndarray:
        """A cleaner version of `reference` (uint8 BGR), the same size; neighbours of other sizes are
        resized to it first. With no neighbours the reference comes back unchanged. The positions of the
        neighbours that agreed well enough to be merged are appended to `merged`, when given."""
        if not neighbours:
            return reference
        sigma = estimate_noise_sigma(cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY), min_noise_sigma)
        return self._merge(reference, self._aligned(reference, neighbours, sigma), merged)

    def _aligned(self, reference: np.ndarray, neighbours: list[np.ndarray],
                 sigma: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each neighbour warped onto the reference by dense flow (float BGR), with its per-pixel weight:
        how well it agrees with the reference, judged against the reference's noise `sigma`."""
        height, width = reference.shape[:2]
        ref_f = reference.astype(np.float32)
        ref_grey = cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY)
        tolerance = 2.0 * (REJECTION_SIGMAS * sigma) ** 2
        grid_x, grid_y = self._grid(height, width)
        result = []
        for neighbour in neighbours:
            if neighbour.shape[:2] != (height, width):
                neighbour = cv2.resize(neighbour, (width, height), interpolation=cv2.INTER_LINEAR)
            flow = self.flow.calc(ref_grey, cv2.cvtColor(neighbour, cv2.COLOR_BGR2GRAY), None)
            aligned = cv2.remap(neighbour, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
            difference = cv2.blur(((aligned - ref_f) ** 2).mean(axis=2), (DISAGREEMENT_WINDOW, DISAGREEMENT_WINDOW))
            # Averaging over the window shrinks the noise part of the difference: compare against the
            # variance of the difference of two noisy frames (2 sigma^2), scaled by the tolerance.
            weight = np.exp(-np.maximum(difference - 2.0 * sigma ** 2, 0.0) / tolerance).astype(np.float32)
            result.append((aligned, weight))
        return result

    @staticmethod
    def _merge(reference: np.ndarray, aligned: list[tuple[np.ndarray, np.ndarray]],
               merged: list[int] | None) -> np.ndarray:
        """The weighted mean of the reference and the neighbours that agree with it over enough of the face."""
        total = reference.astype(np.float32)
        weights = np.ones(reference.shape[:2], np.float32)
        for position, (neighbour, weight) in enumerate(aligned):
            if float(weight.mean()) < MIN_AGREEMENT:
                continue
            total += neighbour * weight[..., None]
            weights += weight
            if merged is not None:
                merged.append(position)
        return np.clip(np.rint(total / weights[..., None]), 0, 255).astype(np.uint8)
