"""Pass 1's face search in video: the detector's full search on some frames, a much cheaper one between.

The full search (`FaceDetector.detect`: four-scale pyramid over the whole frame, plus the mosaic search) is
what finds blurred, dark, compressed and pixelated faces, and it is the most expensive stage of `process`.
A face already found in the previous frame does not need all of it: its region, searched in the one pass
that weighed most in it (`FaceDetector.detect_near`), gives nearly the same box and landmarks for a fraction
of the cost. So a frame gets the full search when

* `full_search_every` frames have passed since the last one (new faces are found at most that late),
* the previous frame had a face the region search does not reproduce reliably: a weak candidate, a face in
  a mosaic, or a small face (YuNet's score of a small face depends on the context around it), or none,
* a shot cut comes before it (everything on screen is new),
* the region search lost a face of the previous frame (it may have turned, blurred or been covered: the full
  search is run on the same frame, so nothing the full search would find there is missed).

Measured in docs/BENCHMARKS.md ("Footage pipeline"): same tracks and recall on the team's clips, the
single-face 360x288 clip at more than real time on two cores.
"""
from __future__ import annotations

import numpy as np

from ..pipeline.detect import Face, FaceDetector, box_overlap

# A face searched alone must be at least this large in the input of the pass that found it (pixels, the box's
# shorter side): smaller faces lose score without the scene around them, and are searched with the frame.
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
