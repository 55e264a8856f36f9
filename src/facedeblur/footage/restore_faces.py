"""Stage 5, align + (fuse) + restore + (fuse) + paste: restore every planned face, batched across faces *and* frames.

Each face is cut out by the shared core (`pipeline/face_crops.py`: native resolution for faces larger
than the working size). With `restorer.temporal_window` k > 0, a face's crop in frame t is first merged
with the same track's crops in frames t-k..t+k (`pipeline/temporal_fusion.py`), so a frame is held back
until k later frames have been cut. With `auto` (the default), each face gets the plan its damage measured
best with (`temporal_fusion.automatic_plan`): a noisy face is merged before it is restored; a smeared face is
restored alone and its restored face merged with its neighbours' restored faces after; any other not at all.
Frames wait in a short queue until enough crops are pending to fill the restorer's batch (or the queue is
full); one model call restores them all; each frame is then held until its k later frames are restored too,
its faces merged after restoring where planned, and pasted back, in order. The queues are bounded, so memory
stays flat on long clips and 4K frames.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..defaults import AUTO_TEMPORAL_WINDOW, AUTO_TEMPORAL_WINDOW_NAME, TemporalWindow
from ..pipeline.face_crops import DEFAULT_LARGE_FACES, FaceCrop, FacePaster, cut_face, finish_crop, restore_working, sharpness
from ..pipeline.temporal_fusion import AUTO_RESTORED_WINDOW, NOT_FUSED, FusionPlan, TemporalFuser, automatic_plan
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
    frames_merged: list[int]  # the neighbouring frames merged into this face before restoring (none: not fused)
    frames_merged_after_restoring: list[int]  # the neighbouring frames whose restored faces were merged into it


@dataclass
class RestoredFrame:
    source: DecodedFrame
    image: np.ndarray  # the frame with every face restored
    faces: list[RestoredFace]


@dataclass
class _CutFrame:
    frame: DecodedFrame
    faces: list[PlannedFace]
    crops: list[FaceCrop]  # as cut; neighbours are always merged from these, never from a merged crop
    plans: list[FusionPlan]  # per face
    frames_merged: list[list[int]]  # per face, the neighbours merged before restoring
    frames_merged_after: list[list[int]]  # per face, the neighbours merged after restoring
    inputs: list[FaceCrop] = field(default_factory=list)  # per face, what the network sees (fused or the crop)
    restored: list[np.ndarray] = field(default_factory=list)  # per face, the network's output (working size)
    outputs: list[np.ndarray] = field(default_factory=list)  # per face, what is pasted (restored, or merged)


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
        # frames either side each stage holds: the widest any plan reaches (a numeric window merges before only)
        self.after_window = AUTO_RESTORED_WINDOW if self.automatic else 0
        self.fuser = TemporalFuser() if self.window else None

    def run(self, frames: Iterator[tuple[DecodedFrame, list[PlannedFace]]]) -> Iterator[RestoredFrame]:
        """Each frame cut, fused (before restoring), restored in batches, fused (after restoring), pasted."""
        restored = self._restored(self._windowed(self._cut(frames), self._fuse_before, self.window))
        for cut in self._windowed(restored, self._fuse_after, self.after_window):
            yield self._pasted(cut)

    def _cut(self, frames: Iterator[tuple[DecodedFrame, list[PlannedFace]]]) -> Iterator[_CutFrame]:
        for frame, faces in frames:
            with self.timer("align"):
                crops = [cut_face(frame.image, f.landmarks, self.size, self.template, self.large_faces) for f in faces]
            with self.timer("fuse"):
                plans = [self._plan(face, crop) for face, crop in zip(faces, crops)]
            yield _CutFrame(frame, faces, crops, plans, [[] for _ in faces], [[] for _ in faces], list(crops))

    def _plan(self, face: PlannedFace, crop: FaceCrop) -> FusionPlan:
        if not self.window or face.track_id is None:
            return NOT_FUSED
        return automatic_plan(crop.working) if self.automatic else FusionPlan(self.window)

    def _windowed(self, cut_frames: Iterator[_CutFrame],
                  fuse_at: Callable[[deque[_CutFrame], int], None], reach: int) -> Iterator[_CutFrame]:
        """Frames in order, each passed to `fuse_at` with up to `reach` frames either side of it in the window."""
        if not reach:
            yield from cut_frames
            return
        window: deque[_CutFrame] = deque()  # up to k frames already passed on, the current one, k ahead
        passed = 0  # how many frames at the front of `window` were already yielded
        for cut in cut_frames:
            window.append(cut)
            if len(window) - passed > reach:
                fuse_at(window, passed)
                yield window[passed]
                passed += 1
            while passed > reach:
                window.popleft()
                passed -= 1
        while passed < len(window):
            fuse_at(window, passed)
            yield window[passed]
            passed += 1

    def _neighbours(self, window: deque[_CutFrame], position: int, face_index: int, reach: int,
                    crops_of: Callable[[_CutFrame], list[np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        """(frame index, crop) of the same track within the face's plan window, from `crops_of` each frame."""
        centre = window[position]
        track_id = centre.faces[face_index].track_id
        # At the clip's end `window` also holds frames more than k behind: those are no neighbours.
        return [(other.frame.index, crop) for offset, other in enumerate(window)
                if 0 < abs(offset - position) <= reach
                for other_face, crop in zip(other.faces, crops_of(other)) if other_face.track_id == track_id]

    def _fuse_before(self, window: deque[_CutFrame], position: int) -> None:
        """Merge the neighbours' damaged working crops into each face planned so (noise averages away)."""
        centre = window[position]
        with self.timer("fuse"):
            for index, (crop, plan) in enumerate(zip(centre.crops, centre.plans)):
                if not plan.window:
                    continue
                neighbours = self._neighbours(window, position, index, plan.window,
                                              lambda cut: [c.working for c in cut.crops])
                if neighbours:
                    accepted: list[int] = []
                    # Only what the network sees is fused; the original crop stays as it was, for the gallery
                    # and as the base the correction of a large face is added to.
                    fused = self.fuser.fuse(crop.working, [n for _, n in neighbours], accepted, plan.min_noise_sigma,
                                            plan.rejection_sigmas)
                    centre.inputs[index] = crop.with_working(fused)
                    centre.frames_merged[index] = [neighbours[i][0] for i in accepted]

    def _fuse_after(self, window: deque[_CutFrame], position: int) -> None:
        """Merge the neighbours' restored working crops into each face planned so. Every neighbour in the
        window is restored by now; its restored crop is read as the network gave it, never a merged one."""
        centre = window[position]
        with self.timer("fuse"):
            for index, plan in enumerate(centre.plans):
                if not plan.after_window:
                    continue
                neighbours = self._neighbours(window, position, index, plan.after_window, lambda cut: cut.restored)
                if neighbours:
                    accepted: list[int] = []
                    centre.outputs[index] = self.fuser.fuse(centre.restored[index], [n for _, n in neighbours],
                                                            accepted, plan.after_min_noise_sigma)
                    centre.frames_merged_after[index] = [neighbours[i][0] for i in accepted]

    def _restored(self, cut_frames: Iterator[_CutFrame]) -> Iterator[_CutFrame]:
        """Frames in order with their faces' network outputs: frames wait in a short queue until enough
        crops are pending to fill the restorer's batch (or the queue is full), then one call restores them."""
        queue: list[_CutFrame] = []
        pending = 0
        for cut in cut_frames:
            queue.append(cut)
            pending += len(cut.crops)
            if pending >= self.restorer.batch_size or len(queue) >= self.max_queued_frames:
                yield from self._restore_queue(queue)
                queue, pending = [], 0
        yield from self._restore_queue(queue)

    def _restore_queue(self, queue: list[_CutFrame]) -> Iterator[_CutFrame]:
        all_crops = [crop for cut in queue for crop in cut.inputs]
        with self.timer("restore"):
            outputs = restore_working(self.restorer, all_crops) if all_crops else []
        position = 0
        for cut in queue:
            cut.restored = outputs[position:position + len(cut.crops)]
            cut.outputs = list(cut.restored)
            position += len(cut.crops)
            yield cut

    def _pasted(self, cut: _CutFrame) -> RestoredFrame:
        # One copy per frame with faces: the decoded frame may still be a neighbour in temporal fusion.
        image = cut.frame.image.copy() if cut.faces else cut.frame.image
        results = []
        with self.timer("paste"):
            for face, crop, output, before, after in zip(cut.faces, cut.inputs, cut.outputs, cut.frames_merged,
                                                         cut.frames_merged_after):
                done = finish_crop(crop, output)
                self.paster.paste(image, done)
                results.append(RestoredFace(face, done.matrix, done.original, done.restored,
                                            sharpness(done.original), sharpness(done.restored), before, after))
        return RestoredFrame(cut.frame, image, results)
