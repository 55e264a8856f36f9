"""`facedeblur process INPUT -o OUTDIR [--config config.yaml]`: restore every face in a clip, frame folder or photo."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "process", help="restore faces in footage (video, frame folder or image)",
        description="Detect, track and restore every face. Writes OUTDIR/restored.mp4 (restored/ for a frame "
                    "folder, restored.png for an image), annotated.mp4, faces/<track>/, manifest.json and index.html. "
                    "A folder of separate photos (different sizes, or a new scene at most steps) is processed photo "
                    "by photo into restored/ and annotated/.")
    parser.add_argument("input", metavar="INPUT",
                        help="video (mp4, mkv, avi, mov, gif), folder of frames or of separate photos, or image")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                        help="result folder (created atomically); an existing one is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTDIR if it holds a previous facedeblur result (other folders are never replaced)")
    parser.add_argument("--fps", type=float, metavar="RATE",
                        help="frame rate of a raw .h264/.h265 stream, which carries none (default: "
                             "pipeline.raw_stream_fps, else 25 with a warning)")
    parser.add_argument("--config", metavar="config.yaml", help="settings file (pipeline: section); default: built-in")
    parser.add_argument("--max-frames", type=int, metavar="N", help="process only the first N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import FacedeblurError
    from ..safe_text import display_name
    from .process import process_input

    settings = load_config(args.config).pipeline
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise FacedeblurError("--max-frames must be at least 1")
        settings.max_frames = args.max_frames
    if args.fps is not None:
        if not 0 < args.fps <= 1000:
            raise FacedeblurError(f"--fps {args.fps:g} is out of range; give the stream's frame rate, e.g. --fps 12")
        settings.raw_stream_fps = args.fps
    refuse_existing_output(Path(args.output), args.overwrite)
    started = time.perf_counter()
    manifest = process_input(Path(args.input), Path(args.output), settings, progress=not args.no_progress)
    elapsed = time.perf_counter() - started
    source, summary = manifest["input"], manifest["summary"]
    speed = f", {source['frames'] / elapsed:.1f} frames/s" if source["frames"] > 1 else ""
    print(f"{source['frames']} frame(s), {summary['tracks']} track(s), {summary['faces_restored']} face(s) restored "
          f"-> {display_name(args.output)}/index.html ({elapsed:.1f}s{speed}; model {manifest['model']['name']} "
          f"{manifest['model']['version']}, {manifest['model']['providers'][0]})")
    return 0


def refuse_existing_output(outdir: Path, overwrite: bool) -> None:
    """A command-line run never replaces a result the user did not ask to replace (the daemon, which owns its
    output folders, re-runs into them on purpose)."""
    from ..errors import FacedeblurError
    from ..safe_text import display_name

    if overwrite or not outdir.exists() or (outdir.is_dir() and not any(outdir.iterdir())):
        return
    raise FacedeblurError(f"output {display_name(outdir)} already exists; add --overwrite to replace a previous "
                          "result, or choose a new folder for -o")
