"""Stage 7, portrait: one best still of each person, from the whole track.

The track's best frame (select_best's top quality: sharp, large, frontal, confident) is the reference.
The best few other detected frames near it in time (near, so pose and expression have barely changed and
dense flow can align them) are merged into it with the robust align-and-merge of
pipeline/temporal_fusion.py: pixels that moved differently or were occluded are rejected, so the merge
averages away noise without ghosting, and a neighbour that disagrees over much of the face (blurrier than
the reference, turned) is left out, so the portrait is never softer than its best frame. (Calibrating the
rejection to how much the frames usually differ merged more: +0.3 to +0.6 dB on synthetic CCTV damage, but
-2.0 dB on real camera shake, whose blurrier neighbours it merged too; docs/BENCHMARKS.md.) The merged face is restored once, the way pass 2
restores any face (pipeline/face_crops.py, `restorer.large_faces` included). Measured against clean frames
in docs/BENCHMARKS.md ("Portrait benchmark").

Crops are cut from the frames during pass 2 (only a track's few portrait frames are kept, a few hundred KB
each), so no extra read of the input is needed.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..pipeline.face_crops import FaceCrop, cut_face, restore_crops, shrink
from ..pipeline.temporal_fusion import TemporalFuser
from .select_best import quality_scores
from .track import Track

PORTRAIT_FRAMES = 5  # the reference and up to this many minus one neighbours merged into it
# Neighbours are taken within this many frames of the reference (about half a second at 25 fps): further
# away the face has usually turned or changed expression too much for a pixel-accurate merge.
PORTRAIT_SPAN = 12


def choose_portrait_frames(track: Track, reference: int, count: int = PORTRAIT_FRAMES,
                           span: int = PORTRAIT_SPAN) -> list[int]:
    """`reference` first, then the best-quality other detected frames within `span` frames of it."""
    observations = track.observations
    qualities = quality_scores(observations)
    nearby = [(float(q), o.frame_index) for q, o in zip(qualities, observations)
              if o.frame_index != reference and abs(o.frame_index - reference) <= span]
    nearby.sort(key=lambda item: (-item[0], abs(item[1] - reference), item[1]))
    return [reference] + [frame for _, frame in nearby[:count - 1]]


class PortraitMaker:
    """Collects the portrait frames' crops during pass 2 (`offer`), then merges and restores each track's
    portrait (`finish`)."""

    def __init__(self, restorer, large_faces: str, frames_by_track: dict[int, list[int]]):
        self.restorer = restorer
        self.large_faces = large_faces
        self.frames_by_track = frames_by_track
        self._wanted = {(track_id, frame) for track_id, frames in frames_by_track.items() for frame in frames}
        self._crops: dict[int, dict[int, FaceCrop]] = defaultdict(dict)

    def offer(self, track_id: int, frame_index: int, image: np.ndarray, landmarks: np.ndarray) -> None:
        if (track_id, frame_index) in self._wanted:
            self._crops[track_id][frame_index] = cut_face(image, landmarks, self.restorer.crop_size,
                                                          self.restorer.info.template, self.large_faces)

    def finish(self, faces_dir: Path) -> dict[int, dict]:
        """Merge, restore and write every track's portrait; returns its manifest entry by track id."""
        from .gallery import save_portrait
        from .manifest import rounded

        fuser = TemporalFuser()
        merged_faces, records = [], []
        for track_id, frames in self.frames_by_track.items():
            crops = self._crops.get(track_id, {})
            frames = [frame for frame in frames if frame in crops]
            if not frames or frames[0] != self.frames_by_track[track_id][0]:
                continue  # the reference frame was never restored (beyond --max-frames): no portrait
            reference = crops[frames[0]]
            accepted: list[int] = []
            merged = fuser.fuse(reference.crop, [crops[frame].crop for frame in frames[1:]], accepted)
            working = shrink(merged, self.restorer.crop_size) if reference.add_correction else merged
            merged_faces.append(FaceCrop(reference.matrix, merged, working, reference.add_correction,
                                         reference.adaptive_detail))
            records.append((track_id, frames, [frames[0]] + [frames[1 + i] for i in accepted], reference))
        self._crops.clear()
        portraits = {}
        for (track_id, frames, used, reference), done in zip(records, restore_crops(self.restorer, merged_faces)):
            paths = save_portrait(faces_dir, track_id, reference.crop, done.face.crop, done.restored)
            portraits[track_id] = {"frame": frames[0], "frames": frames, "frames_merged": used,
                                   "matrix": rounded(reference.matrix, 6), **paths}
        return portraits
