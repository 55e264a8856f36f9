#!/usr/bin/env python3
"""A before/after picture of restorers on one kind of damage: clean | damaged | each model, one row a face.

    .venv/bin/python scripts/before_after.py OLD.onnx NEW.onnx [--damage motion_blur/severe] [--faces 6] \
        [-o docs/images/motion-blur-before-after.png]

The faces are held-out validation faces (the first usable ones of aaf-val.tar and of UTK's held-out slice,
as many of each) and the damage is
exactly `facedeblur evaluate`'s (same seed, same per-face random stream), so the picture shows faces of the
evaluate tables. Under each tile: PSNR against the clean face, and, with the eval extra installed, dlib's
distance to the clean face (same person below 0.6), so the eye and the numbers can be checked together.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from facedeblur.ai_label import restored_label  # noqa: E402
from facedeblur.degradations import degrade  # noqa: E402
from facedeblur.evaluation.dlib_identity import SAME_PERSON_DISTANCE, DlibJudge, dlib_available  # noqa: E402
from facedeblur.evaluation.faces import load_clean_faces  # noqa: E402
from facedeblur.evaluation.metrics import psnr  # noqa: E402
from facedeblur.evaluation.runner import degradation_rng, split_case  # noqa: E402
from facedeblur.image_files import write_image_atomic  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer  # noqa: E402

TILE = 192
CAPTION = 40
HEADER = 46
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45,
          colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    cv2.putText(canvas, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="restorer ONNX files, oldest first")
    parser.add_argument("--sources", type=Path, nargs="+",
                        default=[REPO.parent / "shared" / "data" / name for name in ("aaf-val.tar", "utk-train.tar")],
                        help="clean faces, as for evaluate (UTK: only the trainer's held-out slice)")
    parser.add_argument("--damage", default="motion_blur/severe", help="category/severity, as in evaluate")
    parser.add_argument("--faces", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="evaluate's --seed")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "motion-blur-before-after.png")
    args = parser.parse_args()

    restorers = [FaceRestorer(path) for path in args.models]
    crop_size, template = restorers[0].crop_size, restorers[0].info.template
    per_source = -(-args.faces // len(args.sources))
    faces = load_clean_faces(args.sources, FaceDetector(), crop_size, template, per_source, per_source)[:args.faces]
    judge = DlibJudge() if dlib_available() else None
    category, severity = split_case(args.damage)

    titles = [("clean", ""), ("damaged", args.damage)] + [(r.info.name, r.info.version) for r in restorers]
    canvas = np.full((HEADER + len(faces) * (TILE + CAPTION), TILE * len(titles), 3), 32, np.uint8)
    for column, (title, detail) in enumerate(titles):
        _text(canvas, title, (column * TILE + 6, 18))
        _text(canvas, detail, (column * TILE + 6, 38))
    for row, face in enumerate(faces):
        damaged = degrade(face.crop, category, degradation_rng(args.seed, face.index, category, severity), severity).image
        tiles = [face.crop, damaged] + [restorer.restore_batch([damaged])[0] for restorer in restorers]
        distances = judge.distances(tiles, np.repeat(judge.descriptors([face.crop], template), len(tiles), 0),
                                    template) if judge else [None] * len(tiles)
        top = HEADER + row * (TILE + CAPTION)
        for column, (tile, distance) in enumerate(zip(tiles, distances)):
            canvas[top:top + TILE, column * TILE:(column + 1) * TILE] = cv2.resize(tile, (TILE, TILE),
                                                                                   interpolation=cv2.INTER_CUBIC)
            if column == 0:
                continue
            caption = f"{psnr(face.crop, tile):.2f} dB"
            colour = (255, 255, 255)
            if distance is not None:
                same = distance < SAME_PERSON_DISTANCE
                caption += f"  dlib {distance:.2f} {'same' if same else 'OTHER'}"
                colour = (160, 255, 160) if same else (120, 120, 255)
            _text(canvas, caption, (column * TILE + 6, top + TILE + 26), 0.42, colour)
    newest = restorers[-1].info
    write_image_atomic(args.output, canvas, restored_label(newest.name, newest.version))
    print(f"wrote {args.output} ({len(faces)} faces x {len(titles)} columns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
