"""Stage 9, manifest: everything the run did, as JSON (schema in docs/manifest-schema.md; keep it stable).

Change the schema only additively; a breaking change bumps SCHEMA_VERSION.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..image_files import write_bytes_atomic

SCHEMA_VERSION = 1


def rounded(values, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def now_utc() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_manifest(path: Path, manifest: dict) -> None:
    write_bytes_atomic(path, (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def base_manifest(*, input_path: Path, kind: str, sha256: str, frames: int, fps: float | None, width: int,
                  height: int, duration: float | None, rotation: int, codec: str | None, audio: str | None,
                  model_info, model_file: Path, model_sha256: str, restorer_providers: list[str], detector_providers: list[str],
                  settings: dict, outputs: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "facedeblur", "version": __version__},
        "created_utc": now_utc(),
        "notice": "Faces in these outputs are AI-restored: the model infers detail. Compare with the original.",
        "input": {"path": str(input_path), "name": input_path.name, "kind": kind, "sha256": sha256,
                  "frames": frames, "fps": fps, "width": width, "height": height,
                  "duration_seconds": duration, "rotation_degrees": rotation, "codec": codec, "audio": audio},
        "model": {"name": model_info.name, "version": model_info.version, "crop_size": model_info.crop_size,
                  "file": model_file.name, "sha256": model_sha256, "providers": restorer_providers},
        "detector": {"name": "YuNet 2023mar", "providers": detector_providers},
        "settings": settings,
        "outputs": outputs,
    }
