"""The clean faces `evaluate` scores on: detected and aligned exactly as at run time, held-out only."""
from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import FacedeblurError
from ..image_files import IMAGE_EXTENSIONS, decode_image_bytes, is_image_path
from ..pipeline.align import align_largest_face
from ..pipeline.detect import FaceDetector
from ..face_sources import SourceImage, is_validation, iter_source_images, utk_race

log = logging.getLogger(__name__)


@dataclass
class CleanFace:
    index: int  # position in the evaluation set; part of every degradation seed
    source: str  # the SOURCE argument it came from
    name: str  # file or tar member name
    race: str | None  # UTK race group, None for other sources
    crop: np.ndarray  # aligned clean BGR uint8 crop at the model's working size


def check_sources(sources: list[Path]) -> None:
    """Fail before any model loads when a SOURCE cannot be used."""
    for source in sources:
        if not source.exists():
            raise FacedeblurError(f"{source}: not found; pass folders of clean face images or .tar files")
        if source.is_dir():
            if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in source.rglob("*") if p.is_file()):
                raise FacedeblurError(f"{source}: folder has no images (png, jpg, webp, bmp, tiff); "
                                      "pass a folder of clean face images")
        elif not (is_image_path(source) or tarfile.is_tarfile(source)):
            raise FacedeblurError(f"{source}: neither an image, a folder of images nor a .tar of images; "
                                  "pass clean face photos")


def _iter_images(source: Path) -> Iterator[SourceImage]:
    if source.is_file() and is_image_path(source):
        yield SourceImage(str(source), source.name, source.read_bytes())
    else:
        yield from iter_source_images(source)


def load_clean_faces(sources: list[Path], detector: FaceDetector, crop_size: int, template: np.ndarray,
                     per_source: int | None, utk_validation: int) -> list[CleanFace]:
    """The largest face of each image, aligned; UTK images only from the trainer's held-out slice.

    Takes the first `per_source` usable faces of each source, and at most `utk_validation` UTK faces.
    """
    faces: list[CleanFace] = []
    # Only on a terminal: an error message must stay the one line on stderr.
    progress = tqdm(desc="finding faces", unit="img", leave=False, disable=None)
    try:
        for source in sources:
            faces.extend(_faces_from_source(source, detector, crop_size, template, per_source, utk_validation,
                                            len(faces), progress))
    finally:
        progress.close()
    return faces


def _faces_from_source(source: Path, detector: FaceDetector, crop_size: int, template: np.ndarray,
                       per_source: int | None, utk_validation: int,
                       first_index: int, progress: tqdm) -> list[CleanFace]:
    faces: list[CleanFace] = []
    taken = utk_taken = 0
    skipped: dict[str, int] = {}
    for item in _iter_images(source):
        if per_source is not None and taken >= per_source:
            break
        race = utk_race(item.name)
        if race is not None:
            # Same split as training: anything else from UTK was seen by the model.
            if utk_taken >= utk_validation or not is_validation(source, item.name, max(utk_validation, 1)):
                continue
        progress.update()
        try:
            image = decode_image_bytes(item.data, item.name)
        except FacedeblurError:
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            log.warning("%s: %s is not a readable image; skipped", source, item.name)
            continue
        crop, reason = align_largest_face(image, detector.detect(image), crop_size, template)
        if crop is None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        faces.append(CleanFace(first_index + len(faces), str(source), item.name, race, crop))
        taken += 1
        utk_taken += race is not None
    if skipped:
        log.info("%s: %d face(s) used; skipped %s", source, taken,
                 ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())))
    if taken == 0:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "no usable images"
        raise FacedeblurError(f"{source}: no usable face ({reasons}); pass clean photos with one clear, "
                              "reasonably large face each")
    return faces
