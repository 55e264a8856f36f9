"""A track's identity vector: the one home of how it is made from SFace embeddings and how it is read back.

The vector is the mean of the L2-normalised SFace embeddings of the track's best detected frames, normalised
again: averaging over several views smooths out one blurred or turned frame. It is taken from the input's own
pixels, never the restored ones, so a match never rests on detail the restorer inferred.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

DIMENSIONS = 128                  # SFace's embedding length
IDENTITY_FRAMES = 5               # best frames of a track whose embeddings are averaged
IDENTITY_MODEL = "SFace 2021dec"  # the recogniser that made the vector; vectors of different models never mix
DIGITS = 5                        # rounding in manifest.json: far below the differences that separate people


def track_vector(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of a track's normalised embeddings (rows)."""
    mean = np.asarray(embeddings, np.float64).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def manifest_identity(vector: np.ndarray, frames: list[int]) -> dict[str, Any]:
    """The `identity` object of a track in manifest.json (docs/manifest-schema.md)."""
    return {"model": IDENTITY_MODEL, "frames": [int(f) for f in frames],
            "vector": np.round(np.asarray(vector, np.float64), DIGITS).tolist()}


def vector_from_track(track: Any) -> np.ndarray | None:
    """The identity vector of a manifest track, or None when it has none or it is not a finite vector of the
    model's length (a manifest from an older version, or one edited by hand)."""
    identity = track.get("identity") if isinstance(track, dict) else None
    if not isinstance(identity, dict) or identity.get("model") != IDENTITY_MODEL:
        return None
    values = identity.get("vector")
    if not isinstance(values, list) or len(values) != DIMENSIONS:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    vector = np.asarray(values, np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else None
