"""Stage 5, align + restore + paste: restore every planned face, batched across faces *and* frames.

Frames wait in a short queue until enough face crops are pending to fill the restorer's batch (or the
queue is full), then one model call restores them all and each frame gets its faces pasted back, in order.
The queue is bounded, so memory stays flat on long clips and on 4K frames.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..pipeline.align import estimate_alignment, warp_to_crop
from ..pipeline.paste import feather_mask, paste_back
from .decode import DecodedFrame
from .select_best import sharpness
from .smooth import PlannedFace


@dataclass
class RestoredFace:
    planned: PlannedFace
    matrix: np.ndarray
    original_crop: np.ndarray
    restored_crop: np.ndarray
    sharpness_before: float
    sharpness_after: float


@dataclass
class RestoredFrame:
    source: DecodedFrame
    image: np.ndarray  # the frame with every face restored
    faces: list[RestoredFace]


class FrameBatchRestorer:
    def __init__(self, restorer, timer, max_queued_frames: int = 16):
        self.restorer = restorer
        self.timer = timer
        self.size = restorer.crop_size
        self.template = restorer.info.template
        self.mask = feather_mask(self.size)
        self.max_queued_frames = max(1, max_queued_frames)

    def run(self, frames: Iterator[tuple[DecodedFrame, list[PlannedFace]]]) -> Iterator[RestoredFrame]:
        queue: list[tuple[DecodedFrame, list[PlannedFace], list[np.ndarray], list[np.ndarray]]] = []
        pending = 0
        for frame, faces in frames:
            with self.timer("align"):
                matrices = [estimate_alignment(f.landmarks, self.size, self.template) for f in faces]
                crops = [warp_to_crop(frame.image, m, self.size) for m in matrices]
            queue.append((frame, faces, matrices, crops))
            pending += len(crops)
            if pending >= self.restorer.batch_size or len(queue) >= self.max_queued_frames:
                yield from self._flush(queue)
                queue, pending = [], 0
        yield from self._flush(queue)

    def _flush(self, queue) -> Iterator[RestoredFrame]:
        all_crops = [crop for _, _, _, crops in queue for crop in crops]
        with self.timer("restore"):
            restored = self.restorer.restore_batch(all_crops) if all_crops else []
        position = 0
        for frame, faces, matrices, crops in queue:
            image = frame.image
            results = []
            with self.timer("paste"):
                for face, matrix, crop in zip(faces, matrices, crops):
                    restored_crop = restored[position]
                    position += 1
                    image = paste_back(image, restored_crop, matrix, self.mask)
                    results.append(RestoredFace(face, matrix, crop, restored_crop, sharpness(crop), sharpness(restored_crop)))
            yield RestoredFrame(frame, image, results)
