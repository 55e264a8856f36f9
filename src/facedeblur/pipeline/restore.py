"""The face restorer at run time: our encoder-decoder as ONNX, run by onnxruntime (never PyTorch).

The model file carries its own metadata (format marker, name, version, working size, template), so a
file that is not ours is refused with a clear message instead of producing garbage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..defaults import PACKAGED_MODELS, packaged_models_dir
from ..errors import FacedeblurError
from ..inputs import sha256_of_file
from ..onnx_session import create_session
from .align import FACE_TEMPLATE

FORMAT_MARKER = "facedeblur-restorer-v1"
DEFAULT_MODEL_NAME = PACKAGED_MODELS["default"]


def default_model_path() -> Path:
    return packaged_models_dir() / DEFAULT_MODEL_NAME


def resolve_model(model: str | Path | None, models_dir: Path | None = None) -> Path:
    """The model file for a packaged model's name, a path, or None (the default model)."""
    name = "default" if model is None else str(model)
    if name not in PACKAGED_MODELS:
        return Path(model)
    path = (models_dir or packaged_models_dir()) / PACKAGED_MODELS[name]
    if not path.is_file():
        raise FacedeblurError(f"the '{name}' model is not in this facedeblur package ({path} is missing); use "
                              "'default', or pass the path of a model exported with 'facedeblur train export'")
    return path


@dataclass
class ModelInfo:
    name: str
    version: str
    crop_size: int
    template: np.ndarray
    extra: dict = field(default_factory=dict)


class FaceRestorer:
    def __init__(self, model_path: str | Path | None = None, provider: str = "auto", threads: int = 0,
                 batch_size: int = 16, colour_lock: bool = True, flip_average: bool = False):
        path = resolve_model(model_path)
        if not path.is_file():
            raise FacedeblurError(f"model file {path} not found; pass --model with a facedeblur .onnx file")
        self.path = path
        # Recorded in every manifest, so a report can prove which model file restored the faces.
        self.sha256 = sha256_of_file(path)
        self.session = create_session(path, provider=provider, threads=threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT_MARKER:
            raise FacedeblurError(
                f"{path} is not a facedeblur restorer model (no '{FORMAT_MARKER}' metadata); "
                "export one with 'facedeblur train export' or use the shipped default"
            )
        self.info = ModelInfo(
            name=meta.get("name", path.stem),
            version=meta.get("version", "unknown"),
            crop_size=int(meta.get("crop_size", 128)),
            template=np.array(json.loads(meta["template"]), np.float32) if "template" in meta else FACE_TEMPLATE,
            extra={k: v for k, v in meta.items() if k not in {"format", "name", "version", "crop_size", "template"}},
        )
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = max(1, batch_size)
        self.colour_lock = colour_lock
        # Each face is also restored mirrored, and the two restorations (the second mirrored back) averaged:
        # where the network guesses, its guesses for a face and its mirror image differ and average out.
        # Twice the network's time (docs/BENCHMARKS.md, "Mirror averaging").
        self.flip_average = flip_average

    @property
    def crop_size(self) -> int:
        return self.info.crop_size

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def restore_batch(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Restore aligned BGR uint8 crops of the working size; returns BGR uint8 crops."""
        results: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            batch = np.stack([c[:, :, ::-1] for c in chunk]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
            if self.flip_average:
                both = self.session.run(None, {self.input_name: np.concatenate([batch, batch[..., ::-1]])})[0]
                output = (both[:len(chunk)] + both[len(chunk):, ..., ::-1]) / 2
            else:
                output = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]
            output = np.clip(output.transpose(0, 2, 3, 1)[:, :, :, ::-1] * 255.0, 0, 255)
            for original, restored in zip(chunk, output):
                if self.colour_lock:
                    restored = lock_colour(original, restored)
                results.append(np.clip(np.rint(restored), 0, 255).astype(np.uint8))
        return results

    def restore_any_size(self, image: np.ndarray) -> np.ndarray:
        """Restore one roughly centred face crop of any size (the `--aligned` mode).

        The crop is scaled, keeping its aspect ratio, until its longer side is the working size, and the
        shorter side is filled by mirroring: squashed into a square, a face (and its blur) would change shape."""
        height, width = image.shape[:2]
        size = self.crop_size
        scale = size / max(height, width)
        scaled_w, scaled_h = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
        scaled = image
        if (scaled_w, scaled_h) != (width, height):
            scaled = cv2.resize(image, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        top, left = (size - scaled_h) // 2, (size - scaled_w) // 2
        # BORDER_REFLECT, not REFLECT_101: it also fills a side of one pixel
        square = cv2.copyMakeBorder(scaled, top, size - scaled_h - top, left, size - scaled_w - left, cv2.BORDER_REFLECT)
        restored = self.restore_batch([square])[0][top:top + scaled_h, left:left + scaled_w]
        if (scaled_w, scaled_h) == (width, height):
            return restored
        return cv2.resize(restored, (width, height), interpolation=cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC)


# The lock keeps what a face restorer has no business changing: the colour of each region (skin tone, white
# balance) and the crop's overall brightness. Brightness *structure* is what deblurring restores, so it stays
# free: locking it as well, at the chroma's 16 px cells, pulls back coarse structure that blur moved, and costs
# 0.08-0.28 dB on average (up to 0.4 on CCTV chains, 0.2 on severe camera shake); locking only the mean
# brightness still stops the model's guess at a noisy face's exposure (mild noise: as good as the full lock;
# unlocked, 0.4 dB worse). Measured on 60 validation faces x 33 damage cases with two models
# (docs/BENCHMARKS.md, "The colour lock").
COLOUR_LOCK_CELL = 16


def lock_colour(original: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Keep the input's colour per region and its mean brightness; keep the restored brightness detail.

    Chroma (YCrCb's Cr and Cb) takes the input's low-pass over cells of COLOUR_LOCK_CELL px (area-shrink then
    smooth enlarge, a cheap wide low-pass); luma takes the input's mean. Works on float BGR in 0-255."""
    height, width = original.shape[:2]
    grid = (max(1, width // COLOUR_LOCK_CELL), max(1, height // COLOUR_LOCK_CELL))

    def low_pass(image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, grid, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    to_ycrcb = lambda image: cv2.cvtColor(np.clip(image.astype(np.float32), 0, 255) / 255.0, cv2.COLOR_BGR2YCrCb)
    original_ycc, restored_ycc = to_ycrcb(original), to_ycrcb(restored)
    locked = np.empty_like(restored_ycc)
    locked[:, :, 0] = restored_ycc[:, :, 0] - restored_ycc[:, :, 0].mean() + original_ycc[:, :, 0].mean()
    locked[:, :, 1:] = restored_ycc[:, :, 1:] - low_pass(restored_ycc[:, :, 1:]) + low_pass(original_ycc[:, :, 1:])
    return cv2.cvtColor(locked, cv2.COLOR_YCrCb2BGR) * 255.0
