#!/usr/bin/env python3
"""Benchmark the footage pipeline: per-stage time, end-to-end speed, and peak memory on long clips.

    .venv/bin/python scripts/bench_footage.py [--videos ../shared/videos] [--write-doc]

Every clip in --videos is processed end to end (`process_input`, shipped model, default config) in its own
child process, so the peak RSS printed is that run's alone. The speed target's clip (10 s, 360x288, 24 fps)
is the webcam clip scaled to 360x288 and cut to its first 240 frames. Memory is also measured on a 10 s and
a 60 s clip made by looping the webcam clip, to show it stays flat with length. CPU s is the run's process
time (all threads), which other work on the machine changes far less than wall time. With --write-doc the table replaces
the "## Footage pipeline" section of docs/BENCHMARKS.md (other sections are left alone).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("decode", "detect", "track", "align", "restore", "paste", "annotate", "encode", "gallery")
SECTION = "## Footage pipeline"


def measure_one(clip: Path, max_frames: int | None, stride: int) -> dict:
    """Child-process side: run the pipeline once, print a JSON line."""
    sys.path.insert(0, str(REPO / "src"))
    from facedeblur.config import PipelineSettings
    from facedeblur.footage.process import load_models, run_pipeline

    settings = PipelineSettings(max_frames=max_frames)
    settings.detector.stride = stride
    models = load_models(settings)  # loaded once per input in a daemon too: not part of the per-clip time
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu_started = time.perf_counter(), time.process_time()
        manifest, timer = run_pipeline(clip, Path(tmp) / "out", settings, models, progress=False)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"clip": clip.name, "frames": manifest["input"]["frames"], "fps": manifest["input"]["fps"],
            "size": f"{manifest['input']['width']}x{manifest['input']['height']}",
            "faces": manifest["summary"]["faces_restored"], "tracks": manifest["summary"]["tracks"],
            "seconds": elapsed, "cpu_seconds": cpu, "stages": dict(timer.seconds),
            "cpu_stages": dict(timer.cpu_seconds), "stride": stride,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "provider": manifest["model"]["providers"][0], "model": f"{manifest['model']['name']} {manifest['model']['version']}"}


def run_child(clip: Path, max_frames: int | None = None, stride: int = 1, label: str | None = None) -> dict:
    command = [sys.executable, __file__, "--measure", str(clip), "--stride", str(stride)]
    if max_frames:
        command += ["--max-frames", str(max_frames)]
    print(f"  {label or clip.name} (stride {stride}) ...", file=sys.stderr, flush=True)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["label"] = label or clip.name
    return result


def loop_clip(source: Path, target: Path, seconds: float, size: tuple[int, int] | None = None,
              rate: int | None = None) -> None:
    """Re-encode `source` back to back until `seconds` long (for the memory measurement), optionally scaled
    to `size` and labelled `rate` fps (frames are kept, not resampled: the speed target's clip)."""
    import av
    import cv2

    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        rate, width, height = rate or stream.average_rate, stream.width, stream.height
    width, height = size or (width, height)
    wanted = int(round(seconds * float(rate)))
    written = 0
    with av.open(str(target), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "20", "preset": "ultrafast"}
        while written < wanted:
            with av.open(str(source)) as container:
                for frame in container.decode(video=0):
                    if written >= wanted:
                        break
                    image = frame.to_ndarray(format="rgb24")
                    if image.shape[:2] != (height, width):
                        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                    new = av.VideoFrame.from_ndarray(image, format="rgb24")
                    new.pts, new.time_base = written, 1 / Fraction(rate)
                    out.mux(video.encode(new))
                    written += 1
        out.mux(video.encode(None))


def table(rows: list[dict]) -> str:
    header = ("| clip | size | frames | faces | stride | " + " | ".join(STAGES) + " | other" +
              " | total s | CPU s | processed fps | clip fps | x real time | peak RSS MB |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        stages = " | ".join(f"{row['stages'].get(stage, 0.0):.1f}" for stage in STAGES)
        stages += f" | {row['seconds'] - sum(row['stages'].values()):.1f}"
        speed = row["frames"] / row["seconds"]
        clip_fps = row["fps"] or 0
        realtime = f"{speed / clip_fps:.2f}" if clip_fps else "-"
        lines.append(f"| {row['label']} | {row['size']} | {row['frames']} | {row['faces']} | {row['stride']} | {stages} | "
                     f"{row['seconds']:.1f} | {row.get('cpu_seconds', 0.0):.1f} | {speed:.1f} | {clip_fps:.2f} | {realtime} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def write_doc(markdown: str) -> None:
    from benchmarks_doc import write_section
    write_section(SECTION, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    parser.add_argument("--write-doc", action="store_true", help="update the section in docs/BENCHMARKS.md")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stride", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_one(args.measure, args.max_frames, args.stride)))
        return
    sys.path.insert(0, str(REPO / "src"))
    from facedeblur.inputs import is_video_name
    clips = sorted(p for p in args.videos.iterdir() if is_video_name(p))
    if not clips:
        sys.exit(f"no clips in {args.videos}")
    load = os.getloadavg()
    rows = [run_child(clip) for clip in clips]
    webcam = args.videos / "webcam-single-face.mp4"
    if webcam.exists():
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "webcam-360x288-24fps-10s.mp4"
            loop_clip(webcam, target, 10, size=(360, 288), rate=24)
            rows.append(run_child(target, label="webcam at 360x288, 24 fps, 10 s"))
    stage_clip = args.videos / "stage-and-audience.mp4"
    if stage_clip.exists():
        rows.append(run_child(stage_clip, stride=3, label="stage-and-audience.mp4"))
    memory_rows = []
    if webcam.exists():
        with tempfile.TemporaryDirectory() as tmp:
            for seconds in (10, 60):
                looped = Path(tmp) / f"webcam-looped-{seconds}s.mp4"
                loop_clip(webcam, looped, seconds)
                memory_rows.append(run_child(looped, label=f"webcam looped to {seconds} s"))
    load_after = os.getloadavg()
    command = "  .venv/bin/python scripts/bench_footage.py --write-doc"
    from benchmarks_doc import machine
    markdown = "\n".join([
        SECTION, "",
        "Produced by:", "", command, "",
        f"Machine: {machine()}, no GPU, onnxruntime {rows[0]['provider']}; "
        f"model `{rows[0]['model']}`; default config (detector stride 1) unless the stride column says otherwise. "
        f"Load average before/after: {load[0]:.1f} / {load_after[0]:.1f} (a model-training job shared the CPU, "
        "so these times are pessimistic). Stage columns are seconds of wall time; `restore` is the model, "
        "`track` includes SFace identity checks, `gallery` the manifest, crops and page, `other` everything untimed (output folder, hashing, loop overhead). Each run is a "
        "separate process; peak RSS includes the loaded models.", "",
        table(rows), "",
        "Memory with clip length (the same webcam footage looped):", "",
        table(memory_rows), "",
    ])
    print(markdown)
    if args.write_doc:
        write_doc(markdown)


if __name__ == "__main__":
    main()
