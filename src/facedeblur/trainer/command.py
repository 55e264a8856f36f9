"""`facedeblur train harvest | prepare | pack | show-degradations | run | export` (PyTorch needed only for run and export)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FacedeblurError

# 64 MiB (67.1 MB) travel to the GPU machine per call: the repository (9.7 MB, most of it the shipped
# model), this pack, and both sizes' compact checkpoints (7.3 + 8.3 MB), with about 4 MB to spare.
DEFAULT_PACK_MEGABYTES = 38.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="build the dataset, train and export the restorer ([train] extra)")
    train_commands = parser.add_subparsers(dest="train_command", metavar="STEP", required=True)

    prepare = train_commands.add_parser("prepare", help="photos (folders/.tar) -> aligned face crop cache")
    prepare.add_argument("sources", nargs="+", type=Path, help="photo folders or .tar files ('*val*' names go to validation)")
    prepare.add_argument("-o", "--output", type=Path, required=True, help="cache folder")
    prepare.add_argument("--crop-size", type=int, default=128)
    prepare.add_argument("--workers", type=int, default=0)
    prepare.add_argument("--limit", type=int, default=0, help="at most this many photos per source (0 = all)")
    prepare.set_defaults(handler=run_prepare)

    pack = train_commands.add_parser(
        "pack", help="prepared cache -> one compact archive of WebP crops (to carry to a GPU machine)")
    pack.add_argument("cache", type=Path, help="cache folder made by 'facedeblur train prepare'")
    pack.add_argument("-o", "--output", type=Path, required=True, help="pack file to write (.npz)")
    pack.add_argument("--max-mb", type=float, default=DEFAULT_PACK_MEGABYTES,
                      help="size budget in MB; the best quality that fits is chosen (default: %(default)s, "
                           "which leaves room for code and checkpoints in a 64 MiB device call)")
    pack.add_argument("--format", choices=("webp", "jpeg"), default="webp")
    pack.add_argument("--workers", type=int, default=0)
    pack.set_defaults(handler=run_pack)

    from ..harvest.command import register as register_harvest  # harvest/: its own package (issue 13)
    register_harvest(train_commands)

    show = train_commands.add_parser("show-degradations", help="grid of degradation examples, one column per category")
    show.add_argument("images", nargs="+", type=Path, help="face photos (aligned automatically) or a prepared cache folder")
    show.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    show.add_argument("--rows", type=int, default=4)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--crop-size", type=int, default=128)
    show.set_defaults(handler=run_show_degradations)

    run = train_commands.add_parser("run", help="train the model (see --help for the recipe knobs)")
    from .options import build_parser  # torch-free, so every CLI start stays fast
    build_parser(run)
    run.set_defaults(handler=run_training)

    export = train_commands.add_parser("export", help="checkpoint (or an exported .onnx, re-exported with the same "
                                       "weights) -> ONNX with metadata and a parity check")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--name", default="facedeblur-default")
    export.add_argument("--version", default=None)
    export.set_defaults(handler=run_export)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise FacedeblurError("training needs PyTorch: pip install 'facedeblur[train]'") from None


def run_prepare(args: argparse.Namespace) -> int:
    from .dataset import prepare_dataset
    summary = prepare_dataset(args.sources, args.output, crop_size=args.crop_size, workers=args.workers, limit=args.limit)
    print(f"prepared {summary['counts']} aligned faces in {args.output}; dropped {summary['dropped']}")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from .dataset import pack_dataset
    if not args.cache.is_dir():
        raise FacedeblurError(f"{args.cache}: not a cache folder; make one with 'facedeblur train prepare'")
    summary = pack_dataset(args.cache, args.output, max_megabytes=args.max_mb, image_format=args.format,
                           workers=args.workers)
    print(f"packed {summary['counts']} crops into {args.output}: {summary['megabytes']} MB, {summary['format']} "
          f"quality {summary['quality']}, {summary['sample_psnr_db']} dB from the cache's crops "
          f"(mean over {summary['sample_size']})")
    return 0


def run_show_degradations(args: argparse.Namespace) -> int:
    from .show_degradations import degradation_grid
    degradation_grid(args.images, args.output, rows=args.rows, seed=args.seed, crop_size=args.crop_size)
    print(f"wrote {args.output}")
    return 0


def run_training(args: argparse.Namespace) -> int:
    _require_torch()
    from .train import train
    train(args)
    return 0


def run_export(args: argparse.Namespace) -> int:
    _require_torch()
    from .export import export_checkpoint
    difference = export_checkpoint(args.checkpoint, args.output, name=args.name, version=args.version)
    print(f"exported {args.output}; parity PyTorch vs onnxruntime: max abs difference {difference:.2e}")
    return 0
