#!/usr/bin/env python3
"""Video-quality benchmark with ground truth: does `facedeblur process` make a degraded face in video better?

    .venv/bin/python scripts/bench_video.py [--frames 150] [--model PATH ...] [--write-doc]

1. Synthetic damage: the first --frames frames of ../shared/videos/webcam-single-face.mp4 (a talking head,
   face about 125 px wide) are damaged frame by frame with the trainer's own degradations
   (`degradations.degrade`, scaled to the face: scale = face width / 64, a fresh random draw per frame, as
   real shake and sensor noise are), written as a PNG frame folder, and run through the real pipeline
   (`process_input`, the same code as `facedeblur process`). The clean frames are the ground truth.
2. Real pairs: ../shared/data/video-blur-pairs.tar holds consecutive frames of a speaker, blurry and sharp;
   the blurry frames are processed and scored against the sharp ones.

Scores are on the face region (the detector's box on the clean frame): PSNR and SSIM of the degraded
input and of the restored output against the clean frame, and flicker: the mean absolute change of the
face region from one frame to the next, next to the clean clip's own (a restorer that adds flicker
scores above the clean figure). Each variant (model x large-face mode x temporal window: frames, or auto) is one run.
With --write-doc the tables replace the "## Video benchmark" section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchmarks_doc import machine, write_section  # noqa: E402
from facedeblur.config import PipelineSettings  # noqa: E402
from facedeblur.degradations import degrade, scale_for_face  # noqa: E402
from facedeblur.evaluation.metrics import psnr, ssim  # noqa: E402
from facedeblur.footage.process import load_models, process_input  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402

SECTION = "## Video benchmark"
DEFAULT_CLIP = REPO.parent / "shared" / "videos" / "webcam-single-face.mp4"
DEFAULT_PAIRS = REPO.parent / "shared" / "data" / "video-blur-pairs.tar"
DEFAULT_DAMAGE = ("cctv/moderate", "cctv/severe", "motion_blur/severe", "noise/severe", "low_resolution/severe")
DEFAULT_VARIANTS = ("correction:0", "correction:2", "native:0", "resize:0")


@dataclass
class Clip:
    name: str
    clean: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]  # face region per frame (x1, y1, x2, y2)


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    import av
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames


def face_boxes(frames: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """The largest face per clean frame; a frame where none is found reuses the previous box."""
    detector = FaceDetector()
    boxes, last = [], None
    for frame in frames:
        faces = detector.detect(frame)
        if faces:
            face = max(faces, key=lambda f: f.width * f.height)
            x1, y1, x2, y2 = np.round(face.box).astype(int)
            height, width = frame.shape[:2]
            last = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
        if last is None:
            raise SystemExit("no face found in the first clean frame; pick another clip")
        boxes.append(last)
    return boxes


def damage(clip: Clip, spec: str, seed: int) -> list[np.ndarray]:
    category, severity = spec.split("/")
    widths = [x2 - x1 for x1, _, x2, _ in clip.boxes]
    scale = scale_for_face(float(np.median(widths)))
    return [degrade(frame, category, np.random.default_rng([seed, index]), severity, scale=scale).image
            for index, frame in enumerate(clip.clean)]


def region(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2]


def flicker(frames: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> float:
    changes = [np.abs(region(b, box).astype(np.float32) - region(a, box).astype(np.float32)).mean()
               for a, b, box in zip(frames, frames[1:], boxes[1:])]
    return float(np.mean(changes))


def scores(frames: list[np.ndarray], clip: Clip) -> dict:
    return {"psnr": float(np.mean([psnr(region(c, b), region(f, b)) for c, f, b in zip(clip.clean, frames, clip.boxes)])),
            "ssim": float(np.mean([ssim(region(c, b), region(f, b)) for c, f, b in zip(clip.clean, frames, clip.boxes)])),
            "flicker": flicker(frames, clip.boxes)}


def run_variant(frames: list[np.ndarray], variant: str, model: str | None, workdir: Path, models_cache: dict) -> tuple[list[np.ndarray], dict]:
    large_faces, window = variant.split(":")
    settings = PipelineSettings()
    settings.restorer.model = Path(model) if model else None
    settings.restorer.large_faces = large_faces
    settings.restorer.temporal_window = int(window) if window.isdigit() else window
    settings.output.write_annotated = False
    key = model or "shipped"
    if key not in models_cache:
        models_cache[key] = load_models(settings)
    inputs = workdir / "frames"
    if not inputs.exists():
        inputs.mkdir()
        for index, frame in enumerate(frames):
            cv2.imwrite(str(inputs / f"{index:06d}.png"), frame)
    out = workdir / f"out-{Path(key).stem}-{large_faces}-{window}"
    started = time.perf_counter()
    manifest = process_input(inputs, out, settings, models_cache[key], progress=False)
    seconds = time.perf_counter() - started
    restored = [cv2.imread(str(out / "restored" / f"{index:06d}.png")) for index in range(len(frames))]
    return restored, {"tracks": manifest["summary"]["tracks"], "seconds": seconds}


def real_pairs(archive: Path) -> Clip | None:
    if not archive.exists():
        return None
    blurry, sharp = {}, {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".png"):
                image = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
                (blurry if "/blurry/" in member.name else sharp)[Path(member.name).name] = image
    names = sorted(set(blurry) & set(sharp))
    clip = Clip("video-blur-pairs (real blur)", [sharp[n] for n in names], [])
    clip.boxes = face_boxes(clip.clean)
    clip.damaged = [blurry[n] for n in names]  # type: ignore[attr-defined]
    return clip


def render(rows: list[dict], command: str, frames: int, machine: str) -> str:
    lines = [SECTION, "",
             "Ground truth for video (issue: restoration on severe, real-world damage). Face-region PSNR (dB) / "
             "SSIM against the clean frame; gain = output minus degraded input; flicker = mean absolute change "
             "of the face region between consecutive frames (0-255), to compare with the clean clip's own. "
             "Variant = large-face mode : temporal window (frames either side, or auto). Tracks: tracks found for the one "
             "person.", "",
             f"Command: `{command}` ({frames} frames of each clip; {machine}).", "",
             "| clip / damage | model | variant | input | output | gain (dB) | flicker in / out / clean | tracks | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['damage']} | {row['model']} | {row['variant']} | {row['input']['psnr']:.2f} / "
                     f"{row['input']['ssim']:.3f} | {row['output']['psnr']:.2f} / {row['output']['ssim']:.3f} | "
                     f"{row['output']['psnr'] - row['input']['psnr']:+.2f} | {row['input']['flicker']:.2f} / "
                     f"{row['output']['flicker']:.2f} / {row['clean_flicker']:.2f} | {row['tracks']} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    write_section(SECTION, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--damage", nargs="+", default=list(DEFAULT_DAMAGE), help="category/severity, per frame")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="large_faces:temporal_window (a number of frames, or auto)")
    parser.add_argument("--model", nargs="+", default=[None], help="restorer ONNX file(s); default the shipped one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--include", type=Path, nargs="+", default=[],
                        help="rows of earlier runs (their --json files) to show in the same table, first")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    if not args.clip.exists():
        raise SystemExit(f"{args.clip}: not found; pass --clip with a video of one face")
    clean = read_frames(args.clip, args.frames)
    clip = Clip(f"{args.clip.name}", clean, face_boxes(clean))
    clean_flicker = flicker(clip.clean, clip.boxes)
    rows: list[dict] = []
    models_cache: dict = {}
    cases: list[tuple[str, Clip, list[np.ndarray], float]] = [
        (f"{clip.name}: {spec}", clip, damage(clip, spec, args.seed), clean_flicker) for spec in args.damage]
    pairs = real_pairs(args.pairs)
    if pairs is not None:
        cases.append((pairs.name, pairs, pairs.damaged, flicker(pairs.clean, pairs.boxes)))  # type: ignore[attr-defined]
    for label, source, frames, clean_value in cases:
        input_scores = scores(frames, source)
        with tempfile.TemporaryDirectory() as tmp:
            for model in args.model:
                for variant in args.variants:
                    restored, info = run_variant(frames, variant, model, Path(tmp), models_cache)
                    row = {"damage": label, "model": Path(model).stem if model else "shipped", "variant": variant,
                           "input": input_scores, "output": scores(restored, source), "clean_flicker": clean_value,
                           **info}
                    rows.append(row)
                    print(f"{label:45s} {row['model']:22s} {variant:14s} input {input_scores['psnr']:.2f} -> "
                          f"{row['output']['psnr']:.2f} dB ({row['output']['psnr'] - input_scores['psnr']:+.2f}), "
                          f"flicker {input_scores['flicker']:.2f} -> {row['output']['flicker']:.2f} "
                          f"(clean {clean_value:.2f}), tracks {row['tracks']}, {info['seconds']:.1f} s", flush=True)
    for earlier in reversed(args.include):
        rows[:0] = json.loads(earlier.read_text())
    command = "scripts/bench_video.py " + shlex.join(sys.argv[1:])
    text = render(rows, command, args.frames, machine())
    print(text)
    if args.json:
        args.json.write_text(json.dumps([r for r in rows if r not in sum((json.loads(e.read_text()) for e in args.include), [])],
                                        indent=1))
    if args.write_doc:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
