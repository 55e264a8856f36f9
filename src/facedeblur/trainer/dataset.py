"""`facedeblur train prepare`: photos (folders or .tar files) -> aligned face crops in one compact cache.

Faces are found and aligned with exactly the runtime's detector and template, so the model trains on
what it will see at run time. Images with no face, faces too small to give a sharp crop, and duplicates
are dropped. The cache is a few uint8 arrays (a .npz per split) plus a JSON index: small enough to copy
to a GPU machine in one go.
"""
from __future__ import annotations

import multiprocessing
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import FacedeblurError
from ..face_sources import SourceImage, is_validation, iter_source_images, utk_race  # noqa: F401 - shared with evaluate
from ..image_files import decode_image_bytes
from ..pipeline.align import estimate_alignment, template_points, warp_to_crop
from ..pipeline.detect import DEFAULT_SCORE_THRESHOLD

_detector = None


def _init_worker(score_threshold: float) -> None:
    global _detector
    from ..pipeline.detect import FaceDetector
    cv2.setNumThreads(1)
    # Clean photos need no damaged-face search (pyramid, mosaics); the single pass is also exactly
    # reproducible, which duplicate detection by image hash relies on.
    _detector = FaceDetector(score_threshold=score_threshold, threads=1, provider="cpu", pyramid=(1.0,),
                             find_mosaics=False)


def align_one(item: tuple[str, bytes, int, float]) -> tuple[str, np.ndarray | None, str]:
    """Returns (name, crop or None, reason)."""
    name, data, crop_size, min_eye_ratio = item
    try:
        image = decode_image_bytes(data, name)
    except FacedeblurError:
        return name, None, "unreadable"
    faces = _detector.detect(image)
    if not faces:
        return name, None, "no face"
    face = max(faces, key=lambda f: f.width * f.height)
    eye_distance = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    template_eyes = float(np.linalg.norm(np.diff(template_points(crop_size)[:2], axis=0)))
    if eye_distance < template_eyes * min_eye_ratio:
        return name, None, "face too small"
    matrix = estimate_alignment(face.landmarks, crop_size)
    return name, warp_to_crop(image, matrix, crop_size), "ok"


def average_hash(crop: np.ndarray) -> bytes:
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    return np.packbits(grey > grey.mean()).tobytes()


def prepare_dataset(sources: list[Path], output: Path, crop_size: int = 128, workers: int = 0,
                    min_eye_ratio: float = 0.8, score_threshold: float = DEFAULT_SCORE_THRESHOLD, limit: int = 0,
                    utk_val_count: int = 300) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    splits: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    index: dict[str, list[dict]] = {"train": [], "val": []}
    seen: set[bytes] = set()
    dropped: dict[str, int] = {}
    for source in sources:
        if not source.exists():
            raise FacedeblurError(f"{source}: not found; pass existing photo folders or .tar files")
        images = iter_source_images(source)
        if limit:
            images = itertools.islice(images, limit)
        items = ((img.name, img.data, crop_size, min_eye_ratio) for img in images)
        # spawn, not fork: a child forked from a process with onnxruntime threads running can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(score_threshold,)) as pool:
            for name, crop, reason in tqdm(pool.map(align_one, items, chunksize=16), desc=f"aligning {source.name}",
                                           unit="img"):
                if crop is None:
                    dropped[reason] = dropped.get(reason, 0) + 1
                else:
                    digest = average_hash(crop)
                    if digest in seen:
                        dropped["duplicate"] = dropped.get("duplicate", 0) + 1
                    else:
                        seen.add(digest)
                        split = "val" if is_validation(source, name, utk_val_count) else "train"
                        splits[split].append(crop)
                        index[split].append({"source": source.name, "name": name, "race": utk_race(name)})
    summary = {"crop_size": crop_size, "counts": {k: len(v) for k, v in splits.items()}, "dropped": dropped,
               "sources": [str(s) for s in sources]}
    for split, crops in splits.items():
        array = np.stack(crops) if crops else np.zeros((0, crop_size, crop_size, 3), np.uint8)
        tmp = output / f".{split}.npz.part"
        with open(tmp, "wb") as handle:
            np.savez(handle, crops=array)
        os.replace(tmp, output / f"{split}.npz")
    (output / "index.json").write_text(json.dumps({"summary": summary, **index}, indent=1))
    return summary


def load_split(cache: Path, split: str) -> tuple[np.ndarray, list[dict]]:
    path = Path(cache) / f"{split}.npz"
    if not path.exists():
        raise FacedeblurError(f"{path} not found; run 'facedeblur train prepare' first")
    crops = np.load(path)["crops"]
    index = json.loads((Path(cache) / "index.json").read_text())[split]
    return crops, index
