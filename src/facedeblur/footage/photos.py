"""A folder of separate photos: how a folder is told apart from a clip's frames, and how its faces are found.

The rule (docs/footage-pipeline.md, "Folders: a clip or separate photos"): a folder is taken as separate
photos when its images differ in size, or when most of its consecutive images change scene. A camera's frames
change scene only at a shot cut; separate photos change it at almost every step. A "scene change" is the
colour half of shots.py's cut test (hue-saturation histograms) or the same distance on grey-level histograms
(which sees a change between greyscale photos, where hue and saturation are blank). Not its layout half:
aligned face photos of different people share one layout. Measured on real data:
consecutive photos of different people (All-Age-Faces, UTKFace, the real-lq set) change scene at 97-100 % of
steps, while every shared clip changes at 0-1 % of its consecutive frames and at most 30-40 % even when only
every 25th frame of the edited stage clip is kept; a blurred talking-head sequence at 0 %.

Each photo is then processed as `facedeblur process photo.png` would process it alone: a fresh tracker per
photo (nothing joins faces across photos), every photo searched for faces, and each face kept becomes its
own track, so every person gets a manifest entry, a gallery card and a restored image.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import UnusableInputError
from ..image_files import image_size, read_image
from .shots import THUMBNAIL, colour_histogram, histograms_differ, thumbnail

log = logging.getLogger(__name__)

# Consecutive pairs compared (spread evenly over the folder), so a folder of 100,000 frames costs no more
# than a few dozen image reads before processing starts.
SAMPLED_PAIRS = 24
# More than this fraction of the compared steps change scene: separate photos.
PHOTO_STEP_FRACTION = 0.5


@dataclass(frozen=True)
class FolderVerdict:
    """Which way a folder was taken: 'frames' (one clip) or 'photos' (separate photos), and why."""

    taken_as: str
    reason: str

    def as_dict(self) -> dict:
        return {"taken_as": self.taken_as, "reason": self.reason}


def _grey_histogram(image: np.ndarray) -> np.ndarray:
    thumbnail = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), THUMBNAIL, interpolation=cv2.INTER_AREA)
    histogram = cv2.calcHist([thumbnail], [0], None, [16], [0, 256])
    return histogram / max(float(histogram.sum()), 1.0)


def changes_scene(first: np.ndarray, second: np.ndarray) -> bool:
    """True when `second` shows another scene than `first` (colour or, for greyscale, brightness make-up)."""
    if histograms_differ(colour_histogram(thumbnail(first)), colour_histogram(thumbnail(second))):
        return True
    return histograms_differ(_grey_histogram(first), _grey_histogram(second))


def sampled_steps(count: int, pairs: int = SAMPLED_PAIRS) -> list[int]:
    """Indices i of the consecutive pairs (i, i+1) compared: all of them, or `pairs` spread evenly."""
    steps = count - 1
    if steps <= pairs:
        return list(range(steps))
    return sorted({int(round(i * (steps - 1) / (pairs - 1))) for i in range(pairs)})


def classify_folder(files: list[Path]) -> FolderVerdict:
    """The folder rule: a clip's frames, or separate photos (module docstring)."""
    if len(files) < 2:
        return FolderVerdict("frames", "a single image")
    sizes = [image_size(path) for path in files]
    distinct = sorted(set(sizes))
    if len(distinct) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in distinct[:3]) + (", ..." if len(distinct) > 3 else "")
        return FolderVerdict("photos", f"the images have {len(distinct)} different sizes ({shown})")
    steps = sampled_steps(len(files))
    changes = sum(changes_scene(read_image(files[i]), read_image(files[i + 1])) for i in steps)
    described = f"{changes} of {len(steps)} consecutive image(s) compared change scene"
    if changes > PHOTO_STEP_FRACTION * len(steps):
        return FolderVerdict("photos", described)
    return FolderVerdict("frames", f"one size; {described}")


class PhotoFolderSource:
    """A folder of separate photos, in natural name order; each may have its own size."""

    def __init__(self, folder: Path, files: list[Path], verdict: FolderVerdict):
        from .decode import SourceInfo

        self.path = folder
        self.files = files
        self.sizes = [image_size(path) for path in files]
        # width x height: the largest of each, so any one photo fits inside (each photo's own size is listed).
        self.info = SourceInfo(kind="photos", width=max(w for w, _ in self.sizes), height=max(h for _, h in self.sizes),
                               fps=0.0, frame_rate=None, time_base=None, expected_frames=len(files),
                               names=[p.name for p in files], folder=verdict.as_dict())

    def frames(self, on_audio_packet: Callable | None = None) -> Iterator:
        from .decode import DecodedFrame

        for index, path in enumerate(self.files):
            yield DecodedFrame(index=index, image=read_image(path), pts=None, time=None, name=path.name)

    def photo_entries(self) -> list[dict]:
        return [{"index": index, "name": path.name, "width": width, "height": height}
                for index, (path, (width, height)) in enumerate(zip(self.files, self.sizes))]


@dataclass
class PhotoTracking:
    """What the per-photo trackers found, gathered in the shape the pipeline reads from one FaceTracker."""

    untracked: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # every photo after the first starts afresh
    swaps: int = 0
    merges: int = 0


def find_faces_in_photos(source: PhotoFolderSource, input_path: Path, settings, models, timer, progress: bool):
    """Pass 1 for separate photos: each photo detected and tracked on its own, tracks numbered 1..N over
    the folder in photo order."""
    from .process import FoundFaces, _progress
    from ..pipeline.face_crops import sharpness
    from .select_best import choose_best_frames
    from .smooth import plan_faces
    from .track import FaceTracker
    from ..pipeline.align import estimate_alignment, warp_to_crop
    from ..search.identity_vector import IDENTITY_FRAMES

    restorer, detector = models.restorer, models.detector
    limit = settings.max_frames
    tracking = PhotoTracking()
    tracks = []
    count = 0
    with _progress(min(len(source.files), limit or 10**9), "finding faces", progress) as bar:
        for frame in timer.timed(source.frames(), "decode"):
            if limit and frame.index >= limit:
                break
            count += 1
            if frame.index:
                tracking.cuts.append(frame.index)
            tracker = FaceTracker(settings.tracker, 25.0, 1, models.embedder)  # alone, as a single image is
            with timer("detect"):
                faces = detector.detect(frame.image, include_weak=True)
            with timer("track"):
                tracked = tracker.update(frame.index, frame.image, faces)
            with timer("align"):
                for _, observation in tracked:
                    matrix = estimate_alignment(observation.landmarks, restorer.crop_size, restorer.info.template)
                    observation.sharpness = sharpness(warp_to_crop(frame.image, matrix, restorer.crop_size))
            with timer("track"):
                tracks.extend(tracker.finish())
            tracking.untracked.extend(tracker.untracked)
            tracking.dropped.extend(tracker.dropped)
            tracking.swaps += tracker.swaps
            tracking.merges += tracker.merges
            bar.update(1)
    if count == 0:
        raise UnusableInputError(f"{input_path}: no photo could be read; supply a folder of images")
    for number, track in enumerate(tracks, start=1):
        track.track_id = number
    with timer("track"):
        planned = plan_faces(tracks, tracking.untracked, 0, settings.tracker.landmark_smoothing_sigma)
        best_frames = {t.track_id: choose_best_frames(t, settings.output.gallery_frames_per_track) for t in tracks}
        # a photo's track is one face in one image: that face is its identity sample for person search
        identity_frames = {t.track_id: [frame for frame, _ in choose_best_frames(t, IDENTITY_FRAMES)] for t in tracks}
    log.info("%d photo(s), %d face(s) kept as %d track(s), %d untracked; %d false track(s) dropped", count,
             sum(len(v) for v in planned.values()), len(tracks), len(tracking.untracked), len(tracking.dropped))
    return FoundFaces(count, [None] * count, [None] * count, tracking, tracks, planned, best_frames, identity_frames)
