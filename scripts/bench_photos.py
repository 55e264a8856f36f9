#!/usr/bin/env python3
"""Whole-photo benchmark: damage a whole photo, run the runtime path on it, score the face region.

    .venv/bin/python scripts/bench_photos.py [--photos 60] [--model PATH ...] [--large-faces MODE ...] [--write-doc]

What a user meets: the whole photo is damaged (not an aligned crop), with the trainer's degradations scaled
to the face (scale = face width / 64, so "severe" is as severe relative to the face as on a crop); then
`restore_faces_in_image` (detect on the damaged photo, align, restore, paste back: the code behind
`facedeblur restore`) runs, and PSNR / SSIM are measured on the face's box (found on the clean photo)
against the clean photo. A face the detector misses stays as damaged as it came (no gain). Photos are the
held-out ../shared/data/aaf-val.tar (faces about 90-110 px wide, larger than the 64 px face of the
working crop, so the large-face handling is exercised). With --write-doc the table replaces the
"## Whole photos" section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchmarks_doc import machine, write_section  # noqa: E402
from facedeblur.degradations import CATEGORIES, degrade, scale_for_face  # noqa: E402
from facedeblur.evaluation.metrics import psnr, ssim  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from facedeblur.pipeline.face_crops import LARGE_FACE_MODES  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer  # noqa: E402
from facedeblur.pipeline.restore_image import restore_faces_in_image  # noqa: E402

SECTION = "## Whole photos"
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "aaf-val.tar"


def load_photos(archive: Path, count: int, detector: FaceDetector) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    photos = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile():
                continue
            image = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
            faces = detector.detect(image) if image is not None else []
            if not faces:
                continue
            face = max(faces, key=lambda f: f.width * f.height)
            x1, y1, x2, y2 = np.round(face.box).astype(int)
            height, width = image.shape[:2]
            photos.append((image, (max(0, x1), max(0, y1), min(width, x2), min(height, y2))))
            if len(photos) >= count:
                break
    return photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos-from", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--severities", nargs="+", default=["moderate", "severe"])
    parser.add_argument("--model", nargs="+", default=[None])
    parser.add_argument("--large-faces", nargs="+", default=["correction"], choices=LARGE_FACE_MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    detector = FaceDetector(threads=1)
    photos = load_photos(args.photos_from, args.photos, detector)
    widths = [box[2] - box[0] for _, box in photos]
    rows = []
    for model in args.model:
        restorer = FaceRestorer(model, threads=1)
        for mode in args.large_faces:
            for severity in args.severities:
                per_category = {}
                for category in CATEGORIES:
                    inputs, outputs, ssims, found = [], [], [], 0
                    for index, (photo, box) in enumerate(photos):
                        x1, y1, x2, y2 = box
                        rng = np.random.default_rng([args.seed, index, CATEGORIES.index(category)])
                        damaged = degrade(photo, category, rng, severity, scale=scale_for_face(x2 - x1)).image
                        restored, faces = restore_faces_in_image(damaged, detector, restorer, large_faces=mode)
                        found += bool(faces)
                        clean_face, in_face, out_face = (p[y1:y2, x1:x2] for p in (photo, damaged, restored))
                        inputs.append(psnr(clean_face, in_face))
                        outputs.append(psnr(clean_face, out_face))
                        ssims.append((ssim(clean_face, in_face), ssim(clean_face, out_face)))
                    per_category[category] = (float(np.mean(inputs)), float(np.mean(outputs)),
                                              float(np.mean([s[0] for s in ssims])), float(np.mean([s[1] for s in ssims])),
                                              found)
                mean_in = float(np.mean([v[0] for v in per_category.values()]))
                mean_out = float(np.mean([v[1] for v in per_category.values()]))
                row = {"model": Path(model).stem if model else f"{restorer.info.name} {restorer.info.version}",
                       "mode": mode, "severity": severity, "categories": per_category, "input": mean_in,
                       "output": mean_out}
                rows.append(row)
                print(f"{row['model']:28s} {mode:10s} {severity:8s} face PSNR {mean_in:.2f} -> {mean_out:.2f} dB "
                      f"({mean_out - mean_in:+.2f}); worst category "
                      f"{min(per_category, key=lambda c: per_category[c][1] - per_category[c][0])}", flush=True)
    lines = [SECTION, "",
             f"{len(photos)} held-out AAF photos (faces {min(widths)}-{max(widths)} px wide), each damaged whole "
             "once per category; face-box PSNR (dB) against the clean photo after detect -> align -> restore -> "
             "paste back. Found: photos in which the detector found the damaged face (a missed face gains nothing).",
             "", f"Command: `scripts/bench_photos.py {shlex.join(sys.argv[1:])}` ({machine()}).", "",
             "| model | large faces | tier | mean input | mean output | gain (dB) | per category: gain (dB), found |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = ", ".join(f"{c} {v[1] - v[0]:+.2f} ({v[4]}/{len(photos)})" for c, v in row["categories"].items())
        lines.append(f"| {row['model']} | {row['mode']} | {row['severity']} | {row['input']:.2f} | {row['output']:.2f} | "
                     f"{row['output'] - row['input']:+.2f} | {cells} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_doc:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
