"""Temporal fusion: merge a face's neighbouring frames into it, before it is restored or after.

In video the same face is seen many times with independent noise, compression and (often) blur. The
neighbours' crops are already aligned on the face by the track's smoothed landmarks; dense optical flow
(OpenCV's DIS, fast and robust on small crops) then aligns what landmarks cannot (mouth, blinks, small
head turns), and each neighbour pixel is weighted by how well it agrees with the reference frame, so
pixels that moved differently (or were occluded) are rejected rather than ghosted in: the align-and-merge
idea of burst photography (HDR+). Plain averaging of misaligned frames blurs the face; this does not.
The same merge serves two stages (`FusionPlan`): before restoring, it averages the damaged frames' noise
away; after restoring, it averages the restored faces, each restored from its own frame, so what the
network guessed differently from frame to frame averages away and what the frames agree on stays.
`automatic_plan` (`temporal_window: auto`) merges only where that helps: a noisy face before restoring, a
smeared one (little fine detail left: a CCTV chain, severe blur) after restoring; a clean face gains next
to nothing from the merge, or loses detail where it moves.

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
# compressed and blurred faces measure 0.5-2, severe sensor noise 4-12) is fused over AUTO_TEMPORAL_WINDOW frames
# before it is restored.
AUTO_NOISE_SIGMA = 3.0
# Its neighbours are judged more strictly than REJECTION_SIGMAS, which lets through content differences up to
# about three times the noise (about 40 grey levels under severe noise): merged so, a fast-moving noisy face (the
# real pairs) came out 1.5 dB below not merging it at all. Severe noise, seed 0, moving pairs / still talking head:
# 2.0 +5.66 / +7.97 dB, 1.4 +6.70 / +7.81, 1.0 +7.03 / +7.48, 0.6 +7.22 / +6.90; not merged +7.16 / +6.18.
NOISY_REJECTION_SIGMAS = 1.0
# A smeared face is fused too: one whose working crop keeps less fine detail than this (`sharpness`, the
# Laplacian's variance; on the shared clips clean and mildly blurred faces measure 70-350, the real blurred
# pairs 120, a CCTV chain, severe shake, defocus or x4 resolution loss 7-20). Its neighbours are smeared by
# different blur (each frame's shake or focus is its own): merged before restoring, their blurs mix into one
# the network undoes less well (-0.25 dB on severe shake against no fusion), so each is restored from its own
# frame and the restored faces are merged.
# Any other face is left alone: on a moving one (the real blurred pairs) the merge cost 0.9 dB of detail, and
# aligning neighbours only to judge that would cost a fifth of `process`'s time.
AUTO_SMEARED_SHARPNESS = 40.0
# A smeared face is merged with its neighbours' restored faces over AUTO_RESTORED_WINDOW frames either side
# (3 gained 0.02-0.03 dB more on a still face, nothing on a moving one, for half as many flows again). The
# restored faces differ where the network guessed (each from its own damage), by several grey levels even where
# nothing moved, so their agreement is judged against at least RESTORED_NOISE_SIGMA: the merge keeps what the
# frames agree on and averages the guesses away. A noisy face is not merged after restoring: on top of the merge
# before, it cost 1.7 dB on a fast-moving face under severe noise and gained 0.03 on a still one.
AUTO_RESTORED_WINDOW = 2
RESTORED_NOISE_SIGMA = 8.0


@dataclass(frozen=True)
class FusionPlan:
    """How one face is fused, in two stages that can each be off (window 0):

    - before restoring: the neighbours' damaged working crops are merged into the face's over `window` frames
      either side, so the network sees a cleaner face;
    - after restoring: the neighbours' restored crops are merged into the face's restored crop over
      `after_window` frames either side (each restored on its own, from its own frame).

    Each stage judges a neighbour's agreement against the reference's estimated noise, but never less
    than its floor in grey levels (`min_noise_sigma`, `after_min_noise_sigma`); before restoring, a difference
    of `rejection_sigmas` of those gets weight e^-0.5."""
    window: int
    min_noise_sigma: float = MIN_NOISE_SIGMA
    rejection_sigmas: float = REJECTION_SIGMAS  # before restoring; after restoring, REJECTION_SIGMAS
    after_window: int = 0
    after_min_noise_sigma: float = RESTORED_NOISE_SIGMA


NOT_FUSED = FusionPlan(0)


def estimate_noise_sigma(grey: np.ndarray, floor: float = MIN_NOISE_SIGMA) -> float:
    """Noise standard deviation of a grey image from the median absolute high-pass response (robust to
    edges, which are few next to the flat skin of a face), at least `floor`."""
    high_pass = grey.astype(np.float32) - cv2.blur(grey.astype(np.float32), (3, 3))
    # For white noise of sigma s, the 3x3 high-pass has std s*sqrt(8/9).
    return float(max(floor, MAD_TO_SIGMA * np.median(np.abs(high_pass)) / np.sqrt(8.0 / 9.0)))


def automatic_plan(crop: np.ndarray) -> FusionPlan:
    """`temporal_window: auto` for one face crop (uint8 BGR): a noisy face is fused before restoring, a
    smeared one after restoring (AUTO_NOISE_SIGMA, AUTO_SMEARED_SHARPNESS), any other not at all (the check
    costs two filters)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if estimate_noise_sigma(grey) >= AUTO_NOISE_SIGMA:
        return FusionPlan(AUTO_TEMPORAL_WINDOW, rejection_sigmas=NOISY_REJECTION_SIGMAS)
    if sharpness(grey) < AUTO_SMEARED_SHARPNESS:
        return FusionPlan(0, after_window=AUTO_RESTORED_WINDOW)
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
             min_noise_sigma: float = MIN_NOISE_SIGMA, rejection_sigmas: float = REJECTION_SIGMAS) -> np.ndarray:
        """A cleaner version of `reference` (uint8 BGR), the same size; neighbours of other sizes are
        resized to it first. With no neighbours the reference comes back unchanged. The positions of the
        neighbours that agreed well enough to be merged are appended to `merged`, when given."""
        if not neighbours:
            return reference
        sigma = estimate_noise_sigma(cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY), min_noise_sigma)
        return self._merge(reference, self._aligned(reference, neighbours, sigma, rejection_sigmas), merged)

    def _aligned(self, reference: np.ndarray, neighbours: list[np.ndarray], sigma: float,
                 rejection_sigmas: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each neighbour warped onto the reference by dense flow (float BGR), with its per-pixel weight:
        how well it agrees with the reference, judged against `rejection_sigmas` of its noise `sigma`."""
        height, width = reference.shape[:2]
        ref_f = reference.astype(np.float32)
        ref_grey = cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY)
        tolerance = 2.0 * (rejection_sigmas * sigma) ** 2
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
