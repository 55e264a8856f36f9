"""How the colour lock on the restorer's output changes its gain, per damage case: no lock, the lock that ships
(`pipeline.restore.lock_colour`: chroma per 16 px cell, luma's mean only), and locks that also keep the input's
coarse brightness per cell (16 px, the lock before it, and 64 px).

    .venv/bin/python scripts/bench_colour_lock.py --model MODEL.onnx [--crops ~/facedeblur-campaign/faces128/val.npz]

The crops are the trainer's held-out faces (`facedeblur train prepare` writes them); every case damages the same
faces the same way for every lock (`degrade`, fixed seeds), all three tiers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from facedeblur.degradations import CATEGORIES, SEVERITIES, degrade
from facedeblur.evaluation.metrics import psnr
from facedeblur.pipeline.restore import FaceRestorer, lock_colour


def lock_brightness_and_colour(original: np.ndarray, restored: np.ndarray, cells: int) -> np.ndarray:
    height, width = original.shape[:2]

    def low_pass(image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, (cells, cells), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    return restored - low_pass(restored) + low_pass(original)


def as_shipped(image: np.ndarray) -> np.ndarray:
    """Rounded to 8 bits, as `FaceRestorer.restore_batch` hands out every face."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


LOCKS = {
    "none": lambda original, restored: restored,
    "shipped": lock_colour,
    "all channels, 16 px cells": lambda original, restored: lock_brightness_and_colour(original, restored, 8),
    "all channels, 64 px cells": lambda original, restored: lock_brightness_and_colour(original, restored, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--crops", type=Path, default=Path.home() / "facedeblur-campaign/faces128/val.npz")
    parser.add_argument("--faces", type=int, default=60, help="every 8th held-out crop, this many")
    args = parser.parse_args()
    crops = np.load(args.crops)["crops"][1::8][:args.faces]
    restorer = FaceRestorer(args.model, provider="cpu", threads=2, colour_lock=False)
    print("| case | " + " | ".join(LOCKS) + " |")
    print("|---|" + "---|" * len(LOCKS))
    gains: dict[str, list[float]] = {name: [] for name in LOCKS}
    for category in CATEGORIES:
        for severity in SEVERITIES:
            damaged = [degrade(crop, category, np.random.default_rng([11, index, CATEGORIES.index(category)]),
                               severity=severity).image for index, crop in enumerate(crops)]
            restored = [image.astype(np.float32) for image in restorer.restore_batch(damaged)]
            row = []
            for name, lock in LOCKS.items():
                gain = float(np.mean([psnr(c, as_shipped(lock(d.astype(np.float32), r))) - psnr(c, d)
                                      for d, r, c in zip(damaged, restored, crops)]))
                gains[name].append(gain)
                row.append(f"{gain:+.2f}")
            print(f"| {category}/{severity} | " + " | ".join(row) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"**{np.mean(values):+.3f}**" for values in gains.values()) + " |")


if __name__ == "__main__":
    main()
