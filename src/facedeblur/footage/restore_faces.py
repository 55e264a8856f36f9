"""Stage 5, align + (fuse) + restore + paste: restore every planned face, batched across faces *and* frames.

Each face is cut out by the shared core (`pipeline/face_crops.py`: native resolution for faces larger
than the working size). With `restorer.temporal_window` k > 0, a face's crop in frame t is first merged
with the same track's crops in frames t-k..t+k (`pipeline/temporal_fusion.py`), so a frame is held back
until k later frames have been cut; with `auto` (the default), only faces that fusion helps are merged, each
over the window its kind of damage measured best with (`temporal_fusion.automatic_plan`, k at most 3).
Frames then wait in a short queue until enough crops are pending to fill the restorer's batch (or the
queue is full); one model call restores them all and each frame gets its faces pasted back, in order.
Both queues are bounded, so memory stays flat on long clips and 4K frames.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..defaults import AUTO_TEMPORAL_WINDOW, AUTO_TEMPORAL_WINDOW_NAME, TemporalWindow
from ..pipeline.face_crops import DEFAULT_LARGE_FACES, FaceCrop, FacePaster, cut_face, restore_crops, sharpness
from ..pipeline.temporal_fusion import NOT_FUSED, FusionPlan, TemporalFuser, automatic_plan
from .decode import DecodedFrame
from .smooth import PlannedFace


@dataclass
class RestoredFace:
    planned: PlannedFace
    matrix: np.ndarray
    original_crop: np.ndarray
    restored_crop: np.ndarray
    sharpness_before: float
    sharpness_after: float
    frames_merged: list[int]  # the neighbouring frames temporal fusion merged into this face (none: not fused)


@dataclass
class RestoredFrame:
    source: DecodedFrame
    image: np.ndarray  # the frame with every face restored
    faces: list[RestoredFace]


@dataclass
class _CutFrame:
    frame: DecodedFrame
    faces: list[PlannedFace]
    crops: list[FaceCrop]
    frames_merged: list[list[int]] | None = None  # per face, when fused


class FrameBatchRestorer:
    def __init__(self, restorer, timer, max_queued_frames: int = 16, large_faces: str = DEFAULT_LARGE_FACES,
                 temporal_window: TemporalWindow = 0):
        self.restorer = restorer
        self.timer = timer
        self.size = restorer.crop_size
        self.template = restorer.info.template
        self.paster = FacePaster()
        self.max_queued_frames = max(1, max_queued_frames)
        self.large_faces = large_faces
        self.automatic = temporal_window == AUTO_TEMPORAL_WINDOW_NAME
        self.window = AUTO_TEMPORAL_WINDOW if self.automatic else max(0, int(temporal_window))
        self.fuser = TemporalFuser() if self.window else None

    def run(self, frames: Iterator[tuple[DecodedFrame, list[PlannedFace]]]) -> Iterator[RestoredFrame]:
        queue: list[_CutFrame] = []
        pending = 0
        for cut in self._fused(self._cut(frames)):
            queue.append(cut)
            pending += len(cut.crops)
            if pending >= self.restorer.batch_size or len(queue) >= self.max_queued_frames:
                yield from self._flush(queue)
                queue, pending = [], 0
        yield from self._flush(queue)

    def _cut(self, frames: Iterator[tuple[DecodedFrame, list[PlannedFace]]]) -> Iterator[_CutFrame]:
        for frame, faces in frames:
            with self.timer("align"):
                crops = [cut_face(frame.image, f.landmarks, self.size, self.template, self.large_faces) for f in faces]
            yield _CutFrame(frame, faces, crops)

    def _fused(self, cut_frames: Iterator[_CutFrame]) -> Iterator[_CutFrame]:
        """Frames in order, each face's working crop merged with its track's neighbours."""
        if not self.window:
            yield from cut_frames
            return
        window: deque[_CutFrame] = deque()  # up to k frames already passed on, the current one, k ahead
        passed = 0  # how many frames at the front of `window` were already yielded
        for cut in cut_frames:
            window.append(cut)
            if len(window) - passed > self.window:
                yield self._fuse_at(window, passed)
                passed += 1
            while passed > self.window:
                window.popleft()
                passed -= 1
        while passed < len(window):
            yield self._fuse_at(window, passed)
            passed += 1

    def _plan(self, crop: np.ndarray) -> FusionPlan:
        return automatic_plan(crop) if self.automatic else FusionPlan(self.window)

    def _fuse_at(self, window: deque[_CutFrame], position: int) -> _CutFrame:
        centre = window[position]
        with self.timer("fuse"):
            fused_crops, frames_merged = [], []
            for face, crop in zip(centre.faces, centre.crops):
                plan = self._plan(crop.working) if face.track_id is not None else NOT_FUSED
                # At the clip's end `window` also holds frames more than k behind: those are no neighbours.
                neighbours = [(other.frame.index, other_crop.working) for offset, other in enumerate(window)
                              if 0 < abs(offset - position) <= plan.window
                              for other_face, other_crop in zip(other.faces, other.crops)
                              if other_face.track_id == face.track_id]
                if not neighbours:
                    fused_crops.append(crop)
                    frames_merged.append([])
                    continue
                accepted: list[int] = []
                # Only what the network sees is fused; the original crop stays as it was, for the gallery
                # and as the base the correction of a large face is added to.
                fused = self.fuser.fuse(crop.working, [n for _, n in neighbours], accepted, plan.min_noise_sigma)
                fused_crops.append(crop.with_working(fused))
                frames_merged.append([neighbours[i][0] for i in accepted])
        return _CutFrame(centre.frame, centre.faces, fused_crops, frames_merged)

    def _flush(self, queue: list[_CutFrame]) -> Iterator[RestoredFrame]:
        all_crops = [crop for cut in queue for crop in cut.crops]
        with self.timer("restore"):
            restored = restore_crops(self.restorer, all_crops) if all_crops else []
        position = 0
        for cut in queue:
            # One copy per frame with faces: the decoded frame may still be a neighbour in temporal fusion.
            image = cut.frame.image.copy() if cut.faces else cut.frame.image
            results = []
            with self.timer("paste"):
                for index, face in enumerate(cut.faces):
                    done = restored[position]
                    position += 1
                    self.paster.paste(image, done)
                    results.append(RestoredFace(face, done.matrix, done.original, done.restored,
                                                sharpness(done.original), sharpness(done.restored),
                                                cut.frames_merged[index] if cut.frames_merged else []))
            yield RestoredFrame(cut.frame, image, results)
