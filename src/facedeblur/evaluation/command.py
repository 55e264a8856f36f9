"""`facedeblur evaluate SOURCE... -o OUTDIR`: score our restorer against classical methods on held-out faces."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
from pathlib import Path

from ..defaults import packaged_models_help
from ..errors import FacedeblurError
from ..onnx_session import PROVIDER_CHOICES
from ..image_files import prepare_output_dir

DEFAULT_UTK_VALIDATION = 300
DEFAULT_GRID_FACES = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..degradations import CATEGORIES, SEVERITIES

    parser = subparsers.add_parser(
        "evaluate", help="measure restoration quality per damage category against classical methods",
        description="Detect and align the faces in clean photos, damage each once per category with a fixed "
                    "seed, restore with our model and with classical methods, and report PSNR, SSIM and "
                    "identity similarity in OUTDIR/report.md, report.json and comparison.png.")
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                        help="folders, .tar files or single images of clean faces (UTK: held-out images only)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the report")
    parser.add_argument("--model", metavar="MODEL",
                        help=f"restorer: {packaged_models_help()}, or an .onnx file")
    parser.add_argument("--per-source", type=int, metavar="N", help="at most N faces from each SOURCE (default: all)")
    parser.add_argument("--utk-validation", type=int, default=DEFAULT_UTK_VALIDATION, metavar="N",
                        help=f"the first N held-out UTK faces (default {DEFAULT_UTK_VALIDATION}; the trainer never "
                             "sees them)")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed (default 0)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES), metavar="CATEGORY",
                        help=f"damage categories (default all: {', '.join(CATEGORIES)})")
    parser.add_argument("--severities", nargs="+", choices=SEVERITIES, default=list(SEVERITIES), metavar="TIER",
                        help=f"damage severity tiers (default all: {', '.join(SEVERITIES)}); severe is as hard as "
                             "real CCTV and phone footage")
    parser.add_argument("--misalign", action="store_true",
                        help="cut every face a little off the alignment first (degradations.misalign: about the "
                             "landmark error of faces found on damaged footage); harsher than exactly aligned crops")
    parser.add_argument("--flip-average", action="store_true",
                        help="restore each face and its mirror image and average them (restorer.flip_average)")
    parser.add_argument("--no-classical", action="store_true",
                        help="skip the classical baselines (several times faster; for comparing models)")
    parser.add_argument("--no-dlib", action="store_true",
                        help="skip the independent identity judge (dlib ResNet, about 80 ms a face; it runs when the "
                             "eval extra is installed)")
    parser.add_argument("--grid-faces", type=int, default=DEFAULT_GRID_FACES, metavar="N",
                        help=f"faces shown in comparison.png, each with every category of the hardest tier evaluated "
                             f"(default {DEFAULT_GRID_FACES})")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes (default: one per CPU core); results do not depend on it")
    parser.set_defaults(handler=run)


def command_line(args: argparse.Namespace) -> str:
    """The exact command, rebuilt from the parsed options so it can be re-run as is."""
    parts = ["facedeblur", "evaluate", *map(str, args.sources), "-o", str(args.output)]
    if args.model:
        parts += ["--model", str(args.model)]
    if args.per_source is not None:
        parts += ["--per-source", str(args.per_source)]
    parts += ["--utk-validation", str(args.utk_validation), "--seed", str(args.seed)]
    parts += ["--categories", *args.categories, "--severities", *args.severities]
    if args.misalign:
        parts.append("--misalign")
    if args.no_classical:
        parts.append("--no-classical")
    if args.no_dlib:
        parts.append("--no-dlib")
    if args.grid_faces != DEFAULT_GRID_FACES:
        parts += ["--grid-faces", str(args.grid_faces)]
    return shlex.join(parts)


def check_output_dir(output: Path) -> None:
    """Catch an impossible -o before minutes of face detection; the folder is created only once there are faces."""
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise FacedeblurError(f"output folder {output} cannot be created ({existing} is a file); choose another -o")


def misaligned_faces(faces: list, seed: int) -> list:
    """Every clean face cut a little off the alignment, the same way for every method and damage (the clean
    reference too: the score is how well the face comes back as it was cut)."""
    import dataclasses

    import numpy as np

    from ..degradations import misalign
    # a two-number seed: no damage stream (four numbers, runner.degradation_rng) can equal it
    return [dataclasses.replace(face, crop=misalign(face.crop, np.random.default_rng([seed, face.index])))
            for face in faces]


def pick_grid_faces(faces: list, count: int) -> set[int]:
    """The first face of each source in turn, so the image shows different sources and people."""
    by_source: dict[str, list[int]] = {}
    for face in faces:
        by_source.setdefault(face.source, []).append(face.index)
    picked: list[int] = []
    queues = list(by_source.values())
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return set(picked)


def console_summary(name: str, row: dict) -> str:
    """One scope's PSNR (input -> ours, and the best classical method over the SAME scope, so a severe-tier
    figure is never set beside an all-tier one) and, where measured, dlib's match rate."""
    text = f"{name} PSNR {row['input']['psnr']:.2f} -> {row['ours']['psnr']:.2f} dB ({row['gain_db']:+.2f})"
    if "best_classical" in row:
        text += f", best classical {row['best_classical']['psnr']:.2f} dB"
    if "dlib_match" in row["ours"]:
        text += f", dlib same person {row['input']['dlib_match'] * 100:.0f} -> {row['ours']['dlib_match'] * 100:.0f} %"
    return text


def run(args: argparse.Namespace) -> int:
    try:
        import skimage  # noqa: F401  (SSIM and the deconvolution baselines)
    except ImportError:
        raise FacedeblurError("evaluate needs scikit-image: pip install 'facedeblur[eval]'") from None
    from ..pipeline.detect import FaceDetector
    from ..pipeline.identity import IdentityEmbedder
    from ..pipeline.restore import FaceRestorer
    from .faces import check_sources, load_clean_faces
    from .report import summarise, write_comparison, write_reports
    from ..degradations import SEVERITIES
    from .dlib_identity import DlibJudge, dlib_available
    from .runner import evaluate_faces, evaluate_faces_parallel

    if args.per_source is not None and args.per_source < 1:
        raise FacedeblurError(f"--per-source {args.per_source}: must be at least 1 (leave it out for all faces)")
    if args.utk_validation < 0 or args.grid_faces < 0:
        raise FacedeblurError("--utk-validation and --grid-faces must not be negative")
    check_sources(args.sources)
    check_output_dir(args.output)
    restorer = FaceRestorer(args.model, provider=args.provider, batch_size=32, flip_average=args.flip_average)
    detector = FaceDetector(provider=args.provider)
    embedder = IdentityEmbedder(provider=args.provider)
    faces = load_clean_faces(args.sources, detector, restorer.crop_size, restorer.info.template,
                             args.per_source, args.utk_validation)
    if args.misalign:
        faces = misaligned_faces(faces, args.seed)
    prepare_output_dir(args.output)
    from .runner import case_label
    categories = tuple(case_label(c, s) for s in dict.fromkeys(args.severities) for c in dict.fromkeys(args.categories))
    grid_faces = pick_grid_faces(faces, args.grid_faces)
    with_dlib = not args.no_dlib and dlib_available()
    if not args.no_dlib and not with_dlib:
        print("note: identity by the independent judge (dlib) is not measured: pip install 'facedeblur[eval]'")
    if args.workers > 1 and len(faces) > 8:
        scores, samples, seconds = evaluate_faces_parallel(faces, str(restorer.path), args.provider, categories,
                                                           args.seed, grid_faces, args.workers, not args.no_classical,
                                                           with_dlib, args.flip_average)
    else:
        scores, samples, seconds = evaluate_faces(faces, restorer, embedder, categories, args.seed, grid_faces,
                                                  not args.no_classical, DlibJudge() if with_dlib else None)
    # One tier in the picture (the hardest evaluated), or it grows to hundreds of rows.
    shown_tier = [s for s in SEVERITIES if s in args.severities][-1]
    samples = [sample for sample in samples if sample.category.endswith(f"/{shown_tier}")]
    summary = summarise(scores, categories)
    per_source: dict[str, int] = {}
    for face in faces:
        per_source[face.source] = per_source.get(face.source, 0) + 1
    context = {
        "command": command_line(args),
        "model": {"name": restorer.info.name, "version": restorer.info.version, "path": str(restorer.path),
                  "crop_size": restorer.crop_size},
        "faces": {"total": len(faces), "per_source": per_source,
                  "utk_races": {race: sum(1 for f in faces if f.race == race)
                                for race in sorted({f.race for f in faces if f.race})}},
        "seed": args.seed,
        "misaligned": args.misalign,
        "seconds": round(seconds, 1),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), {restorer.providers[0]}",
    }
    if samples:
        write_comparison(args.output, samples, summary)
    write_reports(args.output, summary, context)
    print(f"evaluated {len(faces)} face(s) x {len(categories)} damage cases in {seconds / 60:.1f} min: "
          + "; ".join(console_summary(name, row) for name, row in
                      (("all tiers", summary["overall"]), ("severe tier", summary["severities"].get("severe")))
                      if row) + f" -> {args.output / 'report.md'}")
    return 0
