#!/usr/bin/env python
"""Restorer speed on this machine: aligned faces per second by batch size, and the `restore` command per photo.

    .venv/bin/python scripts/bench_restore.py [--model PATH] [--runs 7] [--no-doc]

Prints a markdown table and (unless --no-doc) writes it as the `## Restorer speed` section of
docs/BENCHMARKS.md, leaving every other section as it is. Compare model sizes with --model.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from benchmarks_doc import DOC, machine, write_section  # noqa: E402
from facedeblur.image_files import write_image_atomic  # noqa: E402
from facedeblur.pipeline.align import estimate_alignment, warp_to_crop  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer  # noqa: E402
from facedeblur.pipeline.restore_image import restore_faces_in_image  # noqa: E402

BATCH_SIZES = (1, 8, 32, 64)
PHOTO_SIZE = (640, 480)
SECTION = "## Restorer speed"
TARGET_FACES_PER_S = 50
TARGET_S_PER_PHOTO = 0.2


def test_photo() -> np.ndarray:
    """A 640x480 photo with one face: scikit-image's astronaut, scaled and padded to VGA like a camera frame."""
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    face = cv2.resize(face, (480, 480), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_REFLECT101)


def median_seconds(fn, runs: int, warmup: int = 2, clock=time.perf_counter) -> float:
    """Median over `runs` calls after `warmup`. With clock=time.process_time it is this process's CPU time:
    with one onnxruntime thread that barely changes when other jobs share the cores, unlike wall time, so
    it tells what an idle machine would do."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def median_cpu_seconds(fn, runs: int, warmup: int = 2) -> float:
    return median_seconds(fn, runs, warmup, clock=time.process_time)


def other_cpu_load() -> str:
    """What else is using the CPU right now (a training job halves every number here). ps's %CPU is a process's
    average over its life, so a paused (stopped) trainer would still look busy: stopped processes are left out."""
    listing = subprocess.run(["ps", "-eo", "pid,stat,pcpu,args", "--sort=-pcpu", "--no-headers"], capture_output=True,
                             text=True).stdout.splitlines()
    busy = []
    for line in listing:
        pid, state, cpu, command = line.strip().split(None, 3)
        if int(pid) != os.getpid() and not state.startswith(("T", "Z")) and float(cpu) >= 20:
            busy.append(f"{command[:60]} ({float(cpu):.0f}% CPU)")
    load = os.getloadavg()[0]
    return (f"load average {load:.1f} on {os.cpu_count()} cores; "
            + ("other busy processes: " + "; ".join(busy[:4]) if busy else "no other busy process"))


def bench(model: Path | None, runs: int, threads: int) -> tuple[list[str], dict]:
    restorer = FaceRestorer(model, provider="cpu", threads=threads, batch_size=max(BATCH_SIZES))
    detector = FaceDetector(provider="cpu", threads=threads)
    photo = test_photo()
    faces = detector.detect(photo)
    if len(faces) != 1:
        raise SystemExit(f"expected one face in the test photo, found {len(faces)}")
    size = restorer.crop_size
    crop = warp_to_crop(photo, estimate_alignment(faces[0].landmarks, size, restorer.info.template), size)

    single_thread = FaceRestorer(model, provider="cpu", threads=1, batch_size=max(BATCH_SIZES))
    rows = []
    for batch in BATCH_SIZES:
        crops = [crop] * batch
        tensor = np.ascontiguousarray(np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32)
                                      .transpose(0, 3, 1, 2) / 255.0)
        raw = median_seconds(lambda: restorer.session.run(None, {restorer.input_name: tensor}), runs)
        full = median_seconds(lambda: restorer.restore_batch(crops), runs)
        cpu = median_cpu_seconds(lambda: single_thread.session.run(None, {single_thread.input_name: tensor}), runs)
        rows.append((batch, batch / raw, batch / full, 1000 * cpu / batch))

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "photo.png"

        def one_photo() -> None:
            result, restored = restore_faces_in_image(photo, detector, restorer)
            write_image_atomic(target, result)

        per_photo = median_seconds(one_photo, runs)
        single_detector = FaceDetector(provider="cpu", threads=1)

        def one_photo_single_thread() -> None:
            result, restored = restore_faces_in_image(photo, single_detector, single_thread)
            write_image_atomic(target, result)

        per_photo_cpu = median_cpu_seconds(one_photo_single_thread, runs)
        detect_only = median_seconds(lambda: detector.detect(photo), runs)
        detected = detector.detect(photo)
        restore_only = median_seconds(lambda: restore_faces_in_image(photo, detector, restorer, faces=detected), runs)
        result, _ = restore_faces_in_image(photo, detector, restorer, faces=detected)
        write_only = median_seconds(lambda: write_image_atomic(target, result), runs)

        source = Path(folder) / "in" / "photo.png"
        source.parent.mkdir()
        cv2.imwrite(str(source), photo)
        command = [sys.executable, "-m", "facedeblur", "restore", str(source), "-o", str(Path(folder) / "out")]
        if model:
            command += ["--model", str(model)]

        def whole_process() -> None:
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})

        process = median_seconds(whole_process, max(3, runs // 2), warmup=1)
        help_only = median_seconds(lambda: subprocess.run([sys.executable, "-m", "facedeblur", "--help"], check=True,
                                                          capture_output=True), 3, warmup=1)

    model_path = restorer.path
    info = {
        "model": f"{restorer.info.name} {restorer.info.version} ({model_path.name}, "
                 f"{model_path.stat().st_size / 1e6:.2f} MB, {size} px crops)",
        "per_photo": per_photo, "detect": detect_only, "process": process, "rows": rows,
    }
    batched_best = max(r[2] for r in rows)
    idle_estimate = 2 * 1000 / min(r[3] for r in rows)
    lines = [
        "| batch | aligned faces/s (onnxruntime only) | aligned faces/s (restore_batch: + colour lock, conversions) "
        "| CPU ms per face, 1 thread (insensitive to other load) |",
        "|---|---|---|---|",
        *(f"| {b} | {raw:.0f} | {full:.0f} | {cpu:.0f} |" for b, raw, full, cpu in rows),
        "",
        "| `restore`, one 640x480 photo with one face | seconds |",
        "|---|---|",
        f"| per photo after start-up (detect + align + restore + paste + write PNG) | {per_photo:.3f} |",
        f"| - the same in CPU seconds with one thread (insensitive to other load) | {per_photo_cpu:.3f} |",
        f"| - face detection (YuNet, 640x640) | {detect_only:.3f} |",
        f"| - align + restore + paste back | {restore_only:.3f} |",
        f"| - write the PNG (atomic) | {write_only:.3f} |",
        f"| whole process, start-up included (`facedeblur restore photo.png -o out`) | {process:.2f} |",
        f"| - of which Python imports alone (`facedeblur --help`) | {help_only:.2f} |",
        "",
        f"Targets: >= {TARGET_FACES_PER_S} aligned faces/s batched "
        f"({'met' if batched_best >= TARGET_FACES_PER_S else 'NOT met'}: {batched_best:.0f}), "
        f"< {TARGET_S_PER_PHOTO} s per photo after start-up "
        f"({'met' if per_photo < TARGET_S_PER_PHOTO else 'NOT met'}: {per_photo:.3f} s). "
        f"From the CPU time, two idle cores would give at most about {idle_estimate:.0f} aligned faces/s "
        f"(onnxruntime only), and one idle core about {per_photo_cpu:.2f} s per photo.",
    ]
    return lines, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="restorer ONNX model to time (default: the shipped one)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement; the median is reported")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not update docs/BENCHMARKS.md")
    args = parser.parse_args()

    load_before = other_cpu_load()
    lines, info = bench(args.model, args.runs, args.threads)
    command = shlex.join([".venv/bin/python", "scripts/bench_restore.py", *sys.argv[1:]])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        SECTION, "",
        f"Measured {when} on {machine()}, CPU only (onnxruntime "
        f"{__import__('onnxruntime').__version__}); model {info['model']}. Medians of {args.runs} runs after warm-up.",
        f"CPU while measuring: {load_before}.", "",
        *lines, "",
        "Command:", "", "```", command, "```", "",
    ])
    print(section)
    if not args.no_doc:
        # Others edit other sections of this file: re-read it right before writing, replace only ours.
        write_section(SECTION, section)
        print(f"updated {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
