"""Detection benchmark: recall, false detections and landmark error on whole photos we damage ourselves.

Restoration scores (`evaluate`) start from faces that were found; this measures whether they are found.
Each clean photo's face is located once on the undamaged full-size photo (the reference box and
landmarks); the photo is then shrunk so that face is 64-96 px wide, as in footage and in the photos a
user brings, and the *whole photo* is damaged with `degradations.degrade`, with the damage scaled to the
face width. False detections are counted on pictures with no face in them: scikit-image's sample scenes
and frames of the shared videos with their faces painted out.
"""
from __future__ import annotations

import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..degradations import CATEGORIES, SEVERITIES, degrade
from ..image_files import decode_image_bytes, is_image_path
from ..pipeline.detect import Face, FaceDetector
from ..inputs import is_video_name

FACE_WIDTH_RANGE = (64.0, 96.0)
MATCH_IOU = 0.4  # a detection counts as the face when its box overlaps the reference this much
# scikit-image's bundled sample pictures that show no face (camera and astronaut do), so no download.
FACE_FREE_SCENES = ("brick", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel", "grass",
                    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
                    "page", "retina", "rocket", "text")


@dataclass
class Photo:
    name: str
    image: np.ndarray  # clean BGR, shrunk so the face is FACE_WIDTH_RANGE wide
    box: np.ndarray  # reference box and landmarks from the clean full-size photo, in this image's pixels
    landmarks: np.ndarray
    face_width: float


@dataclass
class Scene:
    name: str
    image: np.ndarray  # BGR with no face in it


@dataclass
class Tally:
    """Results for one group of images (a category at one severity, or a set of scenes)."""

    images: int = 0
    found: int = 0
    false: int = 0
    nme: list[float] = field(default_factory=list)  # landmark error / inter-ocular distance, per found face
    seconds: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        nme = np.array(self.nme) if self.nme else np.zeros(0)
        return {"images": self.images, "found": self.found, "false": self.false,
                "nme_mean": round(float(nme.mean()), 4) if nme.size else None,
                "nme_p90": round(float(np.percentile(nme, 90)), 4) if nme.size else None,
                "nme_over_0.1": int((nme > 0.1).sum()),
                "ms_median": round(float(np.median(self.seconds)) * 1000, 1) if self.seconds else None,
                "missed": self.missed}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_error(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean point distance over the 5 landmarks divided by the inter-ocular distance (the usual NME):
    0.05 is a few pixels on a 64 px face; alignment for the restorer tolerates about 0.1."""
    interocular = float(np.linalg.norm(reference[1] - reference[0]))
    return float(np.linalg.norm(found - reference, axis=1).mean() / max(interocular, 1e-6))


def iter_tar_images(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if is_image_path(p)):
            yield file.name, decode_image_bytes(file.read_bytes(), file.name)
        return
    with tarfile.open(path) as archive:
        members = sorted((m for m in archive if m.isfile() and is_image_path(Path(m.name))), key=lambda m: m.name)
        for member in members:
            data = archive.extractfile(member).read()
            yield member.name, decode_image_bytes(data, member.name)


def load_photos(source: Path, count: int, reference: FaceDetector, seed: int = 0, skip: int = 0) -> list[Photo]:
    """The first `count` photos (after `skip`) with exactly one clear face, shrunk to a 64-96 px face.

    The reference face comes from the clean photo at full size, so it is as good as the detector gets."""
    rng = np.random.default_rng(seed)
    photos: list[Photo] = []
    for index, (name, image) in enumerate(iter_tar_images(source)):
        if index < skip:
            continue
        faces = reference.detect(image)
        if len(faces) != 1:  # a second face would be counted as a false detection
            continue
        face = faces[0]
        width = float(rng.uniform(*FACE_WIDTH_RANGE))
        scale = width / face.width
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        photos.append(Photo(name, small, face.box * scale, face.landmarks * scale, width))
        if len(photos) >= count:
            break
    return photos


def skimage_scenes() -> list[Scene]:
    from skimage import data

    scenes = []
    for name in FACE_FREE_SCENES:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2BGR)
        scenes.append(Scene(f"skimage.{name}", image))
    return scenes


def masked_video_frames(videos: Path, per_video: int, mask_detector: FaceDetector) -> list[Scene]:
    """Evenly spaced frames of each clip with every face painted over in a flat colour.

    Faces are found generously (low threshold, the frame also searched at twice its size for tiny faces,
    boxes grown to cover hair and neck, and the union over neighbouring frames so a face missed in one
    frame is still covered), so what is left should hold no face at all."""
    from ..footage.decode import open_source

    scenes = []
    for clip in sorted(p for p in videos.iterdir() if is_video_name(p)):
        frames = [frame.image for frame in open_source(clip).frames()]
        picks = np.linspace(0, len(frames) - 1, per_video).round().astype(int) if frames else []
        for pick in picks:
            image = frames[pick].copy()
            boxes = []
            for neighbour in range(max(0, pick - 3), min(len(frames), pick + 4)):
                boxes.extend(_generous_face_boxes(frames[neighbour], mask_detector))
            fill = np.median(image.reshape(-1, 3), axis=0)
            height, width = image.shape[:2]
            for x1, y1, x2, y2 in boxes:
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1), (y2 - y1)
                x1, x2 = int(max(0, cx - w)), int(min(width, cx + w))
                y1, y2 = int(max(0, cy - 1.1 * h)), int(min(height, cy + 1.2 * h))
                image[y1:y2, x1:x2] = fill
            scenes.append(Scene(f"{clip.name}#{pick}", image))
    return scenes


def _generous_face_boxes(image: np.ndarray, detector: FaceDetector) -> list[np.ndarray]:
    boxes = []
    long_side = max(image.shape[:2])
    for scale in (640 / long_side, 1280 / long_side):
        found, _, scores = detector.candidates(image, scale, 0.3)
        boxes.extend(found[scores >= 0.3])
    return boxes


def damaged(photo: Photo, category: str, severity: str, seed: int, photo_index: int) -> np.ndarray:
    """The whole photo with one damage, seeded by photo, category and severity so reruns match."""
    if category == "clean":
        return photo.image
    rng = np.random.default_rng([seed, photo_index, CATEGORIES.index(category), SEVERITIES.index(severity)])
    return degrade(photo.image, category, rng, severity, scale=photo.face_width / 64.0).image


def score_photo(faces: list[Face], photo: Photo, tally: Tally, seconds: float) -> None:
    tally.images += 1
    tally.seconds.append(seconds)
    matches = [f for f in faces if box_iou(f.box, photo.box) >= MATCH_IOU]
    if matches:
        tally.found += 1
        best = max(matches, key=lambda f: box_iou(f.box, photo.box))
        tally.nme.append(landmark_error(best.landmarks, photo.landmarks))
    else:
        tally.missed.append(photo.name)
    tally.false += len(faces) - min(1, len(matches))


def score_scene(faces: list[Face], tally: Tally, seconds: float, name: str) -> None:
    tally.images += 1
    tally.seconds.append(seconds)
    tally.false += len(faces)
    if faces:
        tally.missed.append(name)  # for scenes: the ones with a false face


def timed(detect: Callable[[np.ndarray], list[Face]], image: np.ndarray) -> tuple[list[Face], float]:
    started = time.perf_counter()
    faces = detect(image)
    return faces, time.perf_counter() - started


def run_photos(detect: Callable[[np.ndarray], list[Face]], photos: list[Photo], categories: tuple[str, ...],
               severities: tuple[str, ...], seed: int = 0) -> dict[tuple[str, str], Tally]:
    results: dict[tuple[str, str], Tally] = {}
    for category in categories:
        for severity in (("-",) if category == "clean" else severities):
            tally = results.setdefault((category, severity), Tally())
            for index, photo in enumerate(photos):
                image = damaged(photo, category, severity, seed, index)
                faces, seconds = timed(detect, image)
                score_photo(faces, photo, tally, seconds)
    return results


def run_scenes(detect: Callable[[np.ndarray], list[Face]], scenes: list[Scene]) -> Tally:
    tally = Tally()
    for scene in scenes:
        faces, seconds = timed(detect, scene.image)
        score_scene(faces, tally, seconds, scene.name)
    return tally


def run_real(detect: Callable[[np.ndarray], list[Face]], source: Path, subsets: tuple[str, ...]) -> dict[str, Tally]:
    """Real low-quality photos (no ground truth): one face each, so found = at least one detection,
    false = detections beyond the first (most of these photos show one face, a few show a second)."""
    results: dict[str, Tally] = {}
    for name, image in iter_tar_images(source):
        subset = Path(name).parent.name
        if subset not in subsets:
            continue
        tally = results.setdefault(subset, Tally())
        faces, seconds = timed(detect, image)
        tally.images += 1
        tally.seconds.append(seconds)
        if faces:
            tally.found += 1
            tally.false += len(faces) - 1
        else:
            tally.missed.append(name)
    return results


def restoration_gain(detect: Callable[[np.ndarray], list[Face]], photos: list[Photo], restorer,
                     categories: tuple[str, ...], severity: str = "moderate", seed: int = 0) -> dict[str, dict]:
    """Is the detector's landmark error small enough for restoration to gain? For each damaged photo whose
    face is found, the face is aligned twice, once with the detected landmarks and once with the clean
    photo's, and the restorer's PSNR gain over its input is measured against the clean photo cut with the
    same alignment. A gain that holds up with detected landmarks means the error does not hurt."""
    from ..pipeline.align import estimate_alignment, warp_to_crop
    from .metrics import psnr

    size, template = restorer.crop_size, restorer.info.template
    results: dict[str, dict] = {}
    for category in categories:
        gains: dict[str, list[float]] = {"detected": [], "reference": []}
        for index, photo in enumerate(photos):
            image = damaged(photo, category, severity, seed, index)
            matches = [f for f in detect(image) if box_iou(f.box, photo.box) >= MATCH_IOU]
            if not matches:
                continue
            for name, landmarks in (("detected", matches[0].landmarks), ("reference", photo.landmarks)):
                matrix = estimate_alignment(landmarks, size, template)
                degraded_crop = warp_to_crop(image, matrix, size)
                clean_crop = warp_to_crop(photo.image, matrix, size)
                restored = restorer.restore_batch([degraded_crop])[0]
                gains[name].append(psnr(clean_crop, restored) - psnr(clean_crop, degraded_crop))
        results[category] = {"faces": len(gains["detected"]),
                             **{f"gain_db_{name}": round(float(np.mean(values)), 2) if values else None
                                for name, values in gains.items()}}
    return results
