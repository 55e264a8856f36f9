#!/usr/bin/env python3
"""Synthesise the built-in sample footage from scikit-image's `astronaut` (NASA photo, public domain).

    .venv/bin/python scripts/make_sample.py            # rewrites src/facedeblur/sample/sample-clip.mp4 and sample-photo.png

The face (Eileen Collins) moves across a procedurally drawn background while the camera shakes; every
frame is blurred (defocus + motion) and gets sensor noise, like bad CCTV/phone footage. The tests use the
same functions (`synthesize_frames`, `write_clip`) with their own sizes and seeds.
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "src" / "facedeblur" / "sample"
# Head and shoulders of the astronaut in the 512x512 original (x1, y1, x2, y2).
HEAD_BOX = (120, 20, 340, 260)


def astronaut_head(height: int) -> np.ndarray:
    from skimage import data

    rgb = data.astronaut()
    x1, y1, x2, y2 = HEAD_BOX
    head = np.ascontiguousarray(rgb[y1:y2, x1:x2, ::-1])  # BGR
    width = round(head.shape[1] * height / head.shape[0])
    return cv2.resize(head, (width, height), interpolation=cv2.INTER_AREA)


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A wall with panels and a floor: texture for the camera shake to move, no faces."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (70, 90, 110)
    for x in range(0, width, max(8, width // 6)):
        cv2.rectangle(image, (x + 4, 8), (x + width // 6 - 4, height * 2 // 3), tuple(int(v) for v in rng.integers(60, 200, 3)), -1)
    image[height * 2 // 3:] = (40, 60, 60)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def degrade(frame: np.ndarray, rng: np.random.Generator, blur_sigma: float, motion: int, noise_sigma: float) -> np.ndarray:
    out = cv2.GaussianBlur(frame, (0, 0), blur_sigma) if blur_sigma > 0 else frame
    if motion > 1:
        kernel = np.zeros((motion, motion), np.float32)
        kernel[motion // 2, :] = 1.0 / motion
        out = cv2.filter2D(out, -1, kernel)
    noisy = out.astype(np.float32) + rng.normal(0, noise_sigma, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def synthesize_frames(width: int = 320, height: int = 240, frames: int = 42, face_height: int = 120, seed: int = 0,
                      blur_sigma: float = 1.6, motion: int = 5, noise_sigma: float = 6.0, shake: float = 3.0):
    """Yield (frame, head_box) with the head moving left to right under camera shake; head_box is x1y1x2y2."""
    rng = np.random.default_rng(seed)
    head = astronaut_head(face_height)
    margin = int(shake * 3) + 2
    scene = background(width + 2 * margin, height + 2 * margin, rng)
    hh, hw = head.shape[:2]
    top = max(0, (height - hh) // 2)
    for index in range(frames):
        progress = index / max(frames - 1, 1)
        left = int(round(margin + progress * (width - hw)))
        canvas = scene.copy()
        canvas[margin + top:margin + top + hh, left:left + hw] = head
        dx, dy = rng.normal(0, shake, 2)
        shift = np.float32([[1, 0, -margin + dx], [0, 1, -margin + dy]])
        frame = cv2.warpAffine(canvas, shift, (width, height), borderMode=cv2.BORDER_REFLECT101)
        box = (left - margin + dx, top + dy, left - margin + dx + hw, top + dy + hh)
        yield degrade(frame, rng, blur_sigma, motion, noise_sigma), box


def write_clip(path: Path, frames, fps: int = 14, crf: int = 23, audio: bool = False) -> None:
    """H.264 MP4 (yuv420p) of BGR frames; with `audio`, a quiet 440 Hz AAC tone as long as the clip."""
    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One encoder thread: x264's output depends on its thread count, which it takes from the CPUs this
        # process may use, so the same frames gave different clips (and test results) on different machines.
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts = index
            video_frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
        if audio_stream is not None:
            samples = int(16000 * len(frames) / fps)
            tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024]
                if len(chunk) < 1024:
                    chunk = np.pad(chunk, (0, 1024 - len(chunk)))
                audio_frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                audio_frame.sample_rate = 16000
                audio_frame.pts = start
                audio_frame.time_base = Fraction(1, 16000)
                container.mux(audio_stream.encode(audio_frame))
            container.mux(audio_stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frames = [frame for frame, _ in synthesize_frames(320, 240, frames=42, face_height=130, seed=1)]
    write_clip(args.out / "sample-clip.mp4", frames, fps=14, crf=26)
    rng = np.random.default_rng(2)
    photo = degrade(astronaut_head(200), rng, blur_sigma=2.0, motion=7, noise_sigma=8.0)
    cv2.imwrite(str(args.out / "sample-photo.png"), photo)
    for name in ("sample-clip.mp4", "sample-photo.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
