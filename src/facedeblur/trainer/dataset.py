"""`facedeblur train prepare`: photos (folders or .tar files) -> aligned face crops in one compact cache.

Faces are found and aligned with exactly the runtime's detector and template, so the model trains on
what it will see at run time. Images with no face, faces too small to give a sharp crop, and duplicates
are dropped. The cache is a few uint8 arrays (a .npz per split) plus a JSON index: small enough to copy
to a GPU machine in one go; `facedeblur train pack` turns it into one archive of WebP crops that is
smaller still (the lent GPU machines take at most 64 MiB per call, code and checkpoints included).
"""
from __future__ import annotations

import multiprocessing
import itertools
import json
import os
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import FacedeblurError
from ..face_sources import SourceImage, is_validation, iter_source_images, utk_race  # noqa: F401 - shared with evaluate
from ..image_files import decode_image_bytes
from ..pipeline.align import MIN_EYE_RATIO, align_largest_face
from ..pipeline.detect import DEFAULT_SCORE_THRESHOLD

_detector = None
PACK_MARKER = "facedeblur-face-pack-v1"


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
    crop, reason = align_largest_face(image, _detector.detect(image), crop_size, min_eye_ratio=min_eye_ratio)
    return name, crop, reason


def average_hash(crop: np.ndarray) -> bytes:
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    return np.packbits(grey > grey.mean()).tobytes()


def prepare_dataset(sources: list[Path], output: Path, crop_size: int = 128, workers: int = 0,
                    min_eye_ratio: float = MIN_EYE_RATIO, score_threshold: float = DEFAULT_SCORE_THRESHOLD, limit: int = 0,
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
    """One split of a prepared cache folder, or of a pack file made from one by `facedeblur train pack`."""
    if Path(cache).is_file():
        return _load_pack_split(Path(cache), split)
    if not Path(cache).exists():
        raise FacedeblurError(f"{cache} not found; pass a cache folder ('facedeblur train prepare') or a pack "
                              "('facedeblur train pack')")
    path = Path(cache) / f"{split}.npz"
    if not path.exists():
        raise FacedeblurError(f"{path} not found; run 'facedeblur train prepare' first")
    crops = np.load(path)["crops"]
    index = json.loads((Path(cache) / "index.json").read_text())[split]
    return crops, index


# ---- the pack: the cache as one compact archive, small enough to carry to a lent GPU machine ---------

PACK_FORMATS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY), "jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY)}
PACK_QUALITIES = tuple(range(98, 49, -2))  # tried from the top: the best quality that fits the budget wins


def _encode_all(crops: np.ndarray, extension: str, flag: int, quality: int, workers: int,
                progress: str | None = None) -> list[bytes]:
    def encode(crop: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(extension, crop, [flag, quality])
        if not ok:
            raise FacedeblurError(f"could not encode a crop as {extension}; this OpenCV build lacks the codec")
        return buffer.tobytes()
    with ThreadPoolExecutor(workers) as pool:  # OpenCV's codecs release the GIL
        return list(tqdm(pool.map(encode, crops), total=len(crops), desc=progress, unit="crop", disable=not progress))


def _decode_all(blobs: list[np.ndarray], workers: int) -> np.ndarray:
    def decode(blob: np.ndarray) -> np.ndarray:
        image = cv2.imdecode(blob, cv2.IMREAD_COLOR)
        if image is None:
            raise FacedeblurError("a crop in the pack could not be decoded; the pack is damaged, make it again "
                                  "with 'facedeblur train pack'")
        return image
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(decode, blobs)))


def pack_dataset(cache: Path, output: Path, max_megabytes: float, image_format: str = "webp",
                 workers: int = 0, sample_size: int = 600) -> dict:
    """Write every crop of a prepared cache into one archive of WebP (or JPEG) crops within a byte budget.

    The quality is the highest of PACK_QUALITIES whose whole archive fits; the summary records it and the
    mean PSNR of the packed crops against the cache's, so the cost of fitting the budget is measured.
    """
    from ..evaluation.metrics import psnr  # scikit-image: the [train] extra has it, the trainer need not load it
    if image_format not in PACK_FORMATS:
        raise FacedeblurError(f"pack format {image_format!r} is not supported; use one of {', '.join(PACK_FORMATS)}")
    extension, flag = PACK_FORMATS[image_format]
    workers = workers or os.cpu_count() or 1
    splits = {split: load_split(cache, split) for split in ("train", "val")}
    budget = int(max_megabytes * 1e6)
    # zlib: the index (source and name of every crop) is 2 MB of JSON, a twentieth of the budget, raw
    index_bytes = zlib.compress(json.dumps({split: index for split, (_, index) in splits.items()}).encode(), 9)
    rng = np.random.default_rng(0)
    everything = sum(len(crops) for crops, _ in splits.values())
    if everything == 0:
        raise FacedeblurError(f"{cache} holds no crops; run 'facedeblur train prepare' on photos with faces first")
    sample_from = splits["train"][0] if len(splits["train"][0]) else splits["val"][0]
    sample = sample_from[rng.choice(len(sample_from), size=min(sample_size, len(sample_from)),
                                    replace=False)]
    for quality in PACK_QUALITIES:
        sample_blobs = _encode_all(sample, extension, flag, quality, workers)
        estimate = np.mean([len(b) for b in sample_blobs]) * everything + len(index_bytes)
        if estimate > budget * 1.02 and quality != PACK_QUALITIES[-1]:
            continue  # clearly too big by the sample: no need to encode everything at this quality
        arrays: dict[str, np.ndarray] = {}
        for split, (crops, _) in splits.items():
            blobs = _encode_all(crops, extension, flag, quality, workers, f"packing {split} at quality {quality}")
            arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
            arrays[f"{split}_bytes"] = np.frombuffer(b"".join(blobs), np.uint8)
        total = sum(a.nbytes for a in arrays.values()) + len(index_bytes)
        if total <= budget:
            break
    else:
        raise FacedeblurError(f"{everything} crops do not fit in {max_megabytes} MB even at {image_format} quality "
                              f"{PACK_QUALITIES[-1]}; raise --max-mb or prepare fewer photos (--limit)")
    decoded = _decode_all([np.frombuffer(b, np.uint8) for b in sample_blobs], workers)
    summary = {"format": image_format, "quality": quality, "crop_size": int(sample.shape[1]),
               "counts": {split: len(crops) for split, (crops, _) in splits.items()},
               "bytes": int(total), "megabytes": round(total / 1e6, 2), "budget_megabytes": max_megabytes,
               "sample_psnr_db": round(float(np.mean([psnr(s, d) for s, d in zip(sample, decoded)])), 2),
               "sample_size": len(sample)}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part")
    with open(tmp, "wb") as handle:
        np.savez(handle, pack_format=np.array(PACK_MARKER), summary=np.frombuffer(json.dumps(summary).encode(), np.uint8),
                 index=np.frombuffer(index_bytes, np.uint8), **arrays)
    os.replace(tmp, output)
    return summary


def _load_pack_split(pack: Path, split: str) -> tuple[np.ndarray, list[dict]]:
    try:
        archive = np.load(pack)
        if str(archive["pack_format"]) != PACK_MARKER:
            raise KeyError
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
        raise FacedeblurError(f"{pack} is not a facedeblur face pack; make one with 'facedeblur train pack', "
                              "or pass the cache folder") from None
    offsets, data = archive[f"{split}_offsets"], archive[f"{split}_bytes"]
    blobs = [data[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
    index = json.loads(zlib.decompress(archive["index"].tobytes()))[split]
    summary = json.loads(archive["summary"].tobytes())
    if not blobs:
        size = summary["crop_size"]
        return np.zeros((0, size, size, 3), np.uint8), index
    return _decode_all(blobs, os.cpu_count() or 1), index
