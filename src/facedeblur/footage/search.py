"""Pass 1's face search in video: the detector's full search on some frames, a cheaper one between.

The full search (`FaceDetector.detect`: four-scale pyramid over the whole frame, plus the mosaic search) is
what finds blurred, dark, compressed and pixelated faces, and it was the most expensive stage of `process`.
A clear face already found in the previous frame does not need all of it: the one pass that weighed most in
it (`FaceDetector.detect_near`, usually the full-size pass alone, as detection was before the pyramid) finds
it again for about half the cost. So a frame gets the full search when

* `detector.full_search_every` detection frames have passed since the last one (a face only the other
  passes or the mosaic search see is found at most that late),
* the previous frame had no face, or a face that may need the other passes: a weak candidate, a face in a
  mosaic, or a small face (below NEAR_MIN_FACE_PX in its pass),
* a shot cut comes before it (everything on screen is new),
* the cheaper search lost a face of the previous frame (it may have blurred, turned or been covered): the
  full search then runs on the same frame, so no face it would find there is missed.

Measured in docs/BENCHMARKS.md ("Footage pipeline" and "Tracking against ground truth").
"""
from __future__ import annotations

import numpy as np

from ..pipeline.detect import Face, FaceDetector, box_overlap

# A face is searched in one pass only when it is at least this large in that pass's input (pixels, the box's
# shorter side): a smaller face's score and landmarks swing between passes, and only their fusion holds it.
NEAR_MIN_FACE_PX = 40
# A face of the previous frame counts as found again when a face of this frame overlaps it this much.
REFOUND_IOU = 0.3


class FaceSearch:
    def __init__(self, detector: FaceDetector, full_search_every: int):
        self.detector = detector
        self.every = max(1, full_search_every)
        self.previous: list[Face] = []
        self.since_full = 0
        self.full_searches = 0
        self.searches = 0

    def find(self, image: np.ndarray, after_cut: bool = False) -> list[Face]:
        """The faces of the next detection frame (weak candidates included, for the tracker)."""
        self.searches += 1
        faces = None
        if not after_cut and self.since_full + 1 < self.every and self._searchable_alone(image.shape):
            faces = self.detector.detect_near(image, self.previous, include_weak=True)
            if not all(_found_again(face, faces) for face in self.previous):
                faces = None
        if faces is None:
            faces = self.detector.detect(image, include_weak=True)
            self.full_searches += 1
            self.since_full = 0
        else:
            self.since_full += 1
        self.previous = faces
        return faces

    def _searchable_alone(self, shape: tuple[int, ...]) -> bool:
        detector = self.detector
        if not self.previous:
            return False
        base = detector.input_size / max(shape[:2])
        for face in self.previous:
            if face.weak or face.mosaic or face.level >= len(detector.pyramid):
                return False
            if min(face.width, face.height) * base * detector.pyramid[face.level] < NEAR_MIN_FACE_PX:
                return False
        return True


def _found_again(face: Face, faces: list[Face]) -> bool:
    return any(box_overlap(face.box, other.box) >= REFOUND_IOU for other in faces)
