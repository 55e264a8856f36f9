"""`facedeblur demo`: the main job on the built-in sample (no user data, no network).

Restores the sample photo, then runs the footage pipeline on the sample clip, so a first-time user sees
every output (restored image, restored and annotated clips, the face gallery) in one folder.
"""
from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run on the built-in sample photo and clip")
    parser.add_argument("-o", "--output", type=Path, default=Path("sample-output"), help="where the results go")
    parser.set_defaults(handler=run)


def sample_path(name: str) -> Path:
    return Path(str(resources.files("facedeblur") / "sample" / name))


def run(args: argparse.Namespace) -> int:
    from .restore_command import main_restore
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    status = main_restore([str(sample_path("sample-photo.png"))], output / "photo")
    clip = sample_path("sample-clip.mp4")
    from .config import PipelineSettings
    from .footage.process import process_input
    clip_output = output / "clip"
    if clip_output.exists():
        import shutil
        shutil.rmtree(clip_output)
    manifest = process_input(clip, clip_output, PipelineSettings())
    tracks = len(manifest.get("tracks", []))
    print(f"processed the sample clip: {tracks} track(s) -> {clip_output}/index.html (open it in a browser)")
    print(f"restored sample photo -> {output / 'photo'}")
    return status
