"""`facedeblur train harvest SOURCE... -o OUTDIR`: registered under `facedeblur train` (trainer/command.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FacedeblurError
from . import settings as defaults


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of 0 or more")
    return value


def register(train_commands: argparse._SubParsersAction) -> None:
    harvest = train_commands.add_parser(
        "harvest", help="collect clean, sharp faces (web pages, URL lists, photo folders, your own footage) "
                        "with their provenance, for 'train prepare'",
        description="Only harvest what you have the right to use (docs/harvest.md).")
    harvest.add_argument("sources", nargs="+", metavar="SOURCE",
                         help="an http(s):// page, a text file of URLs, a photo folder, a video or a frame folder")
    harvest.add_argument("-o", "--output", type=Path, required=True, help="OUTDIR (give it to 'train prepare')")
    harvest.add_argument("--max-images", type=_positive_int, default=0, help="stop after keeping this many (0 = no limit)")
    harvest.add_argument("--per-site", type=_positive_int, default=defaults.DEFAULT_PER_SITE,
                         help="keep at most this many per web site (0 = no limit)")
    harvest.add_argument("--delay", type=_non_negative_float, default=defaults.DEFAULT_DELAY,
                         help="seconds between two requests to one host; a longer robots.txt Crawl-delay wins")
    harvest.add_argument("--depth", type=_positive_int, default=defaults.DEFAULT_DEPTH,
                         help="follow same-site links this many steps from each start page")
    harvest.add_argument("--max-pages", type=_positive_int, default=defaults.DEFAULT_MAX_PAGES,
                         help="render at most this many pages per start page")
    harvest.add_argument("--max-scrolls", type=_positive_int, default=defaults.DEFAULT_MAX_SCROLLS,
                         help="scroll each page at most this many times for lazy-loaded images")
    harvest.add_argument("--timeout", type=_non_negative_float, default=defaults.DEFAULT_TIMEOUT,
                         help="seconds for one page or download")
    harvest.add_argument("--max-bytes", type=_positive_int, default=defaults.DEFAULT_MAX_BYTES,
                         help="refuse an image file larger than this")
    harvest.add_argument("--max-pixels", type=_positive_int, default=defaults.DEFAULT_MAX_IMAGE_PIXELS,
                         help="refuse an image with more pixels than this, from its header, before decoding")
    harvest.add_argument("--min-face-size", type=_positive_int, default=defaults.DEFAULT_MIN_FACE_SIZE,
                         help="px, shorter side of the face's box")
    harvest.add_argument("--min-sharpness", type=_non_negative_float, default=defaults.DEFAULT_MIN_SHARPNESS,
                         help="Laplacian variance of the aligned face (docs/harvest.md)")
    harvest.add_argument("--min-frontalness", type=_non_negative_float, default=defaults.DEFAULT_MIN_FRONTALNESS,
                         help="0-1: 1 = frontal and level, 0 = profile")
    harvest.add_argument("--near-duplicate-bits", type=_positive_int, default=defaults.DEFAULT_NEAR_DUPLICATE_BITS,
                         help="perceptual-hash distance (of 256 bits) up to which an image is a near copy")
    harvest.add_argument("--per-track", type=_positive_int, default=defaults.DEFAULT_PER_TRACK,
                         help="footage: best frames kept per tracked person")
    harvest.add_argument("--frames", action="store_true",
                         help="folder SOURCEs are frame folders (footage), not photo folders")
    harvest.add_argument("--no-progress", action="store_true", help="no progress bar")
    harvest.set_defaults(handler=run_harvest)


def run_harvest(args: argparse.Namespace) -> int:
    from .run import harvest, summary_lines

    if args.timeout <= 0:
        raise FacedeblurError("--timeout must be more than 0 seconds; give the time one page or download may take")
    if args.per_track < 1:
        raise FacedeblurError("--per-track must be at least 1; give the number of frames to keep per person")
    settings = defaults.HarvestSettings(
        max_images=args.max_images, per_site=args.per_site, delay=args.delay, depth=args.depth,
        max_pages=args.max_pages, max_scrolls=args.max_scrolls, timeout=args.timeout,
        max_bytes=args.max_bytes, max_pixels=args.max_pixels, min_face_size=args.min_face_size,
        min_sharpness=args.min_sharpness, min_frontalness=args.min_frontalness,
        near_duplicate_bits=args.near_duplicate_bits, per_track=args.per_track, frames=args.frames,
        progress=not args.no_progress)
    summary = harvest(args.sources, args.output, settings)
    for line in summary_lines(summary, args.output):
        print(line)
    return 0
