"""A picture of what the trainer does to faces: one row per face and severity tier, one column per category."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..degradations import CATEGORIES, SEVERITIES, degrade
from ..errors import FacedeblurError
from ..image_files import is_image_path, read_image, write_image_atomic


def _faces_from(paths: list[Path], count: int, crop_size: int) -> list[np.ndarray]:
    if len(paths) == 1 and (paths[0] / "val.npz").exists():
        from .dataset import load_split
        crops, _ = load_split(paths[0], "val")
        return list(crops[:count])
    from ..pipeline.align import estimate_alignment, warp_to_crop
    from ..pipeline.detect import FaceDetector
    detector = FaceDetector()
    files = [p for path in paths for p in (sorted(path.iterdir()) if path.is_dir() else [path]) if is_image_path(p)]
    faces = []
    for file in files:
        image = read_image(file)
        found = detector.detect(image)
        if found:
            faces.append(warp_to_crop(image, estimate_alignment(found[0].landmarks, crop_size), crop_size))
        if len(faces) == count:
            break
    if not faces:
        raise FacedeblurError("no face found in the given images; pass face photos or a prepared cache folder")
    return faces


def degradation_grid(images: list[Path], output: Path, rows: int = 4, seed: int = 0, crop_size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    faces = _faces_from(images, rows, crop_size)
    header_height = 22
    columns = ["clean", *CATEGORIES]
    header = np.full((header_height, crop_size * len(columns), 3), 255, np.uint8)
    for i, name in enumerate(columns):
        cv2.putText(header, name.replace("_", " ")[:18], (i * crop_size + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    grid_rows = [header]
    for face in faces:
        for severity in SEVERITIES:
            labelled = face.copy()
            cv2.putText(labelled, severity, (3, crop_size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * crop_size / 64,
                        (255, 255, 255), 1, cv2.LINE_AA)
            grid_rows.append(np.hstack([labelled] + [degrade(face, category, rng, severity).image
                                                     for category in CATEGORIES]))
    grid = np.vstack(grid_rows)
    write_image_atomic(output, grid)
    return grid
