"""The `train run` options, kept free of PyTorch imports so the CLI starts fast on any install."""
from __future__ import annotations

import argparse


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="Train the facedeblur restorer.")
    parser.add_argument("--data", required=True,
                        help="cache folder made by 'facedeblur train prepare', or a pack made by 'facedeblur train pack'")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, validation grids, log")
    parser.add_argument("--size", choices=("default", "quality"), default="default",
                        help="the model's shape (trainer/arch.py MODEL_SIZES); the options below override parts of it")
    parser.add_argument("--width", type=int)
    parser.add_argument("--levels", type=int)
    parser.add_argument("--blocks", type=int, help="residual blocks per level")
    parser.add_argument("--middle-blocks", type=int)
    parser.add_argument("--unshuffle", type=int, help="work at 1/N resolution inside (pixel unshuffle)")
    parser.add_argument("--patch", type=int, default=64, help="training patch side (crops are degraded whole)")
    parser.add_argument("--batch", type=int, default=16, help="per process")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate ramp, whenever the optimiser is new")
    parser.add_argument("--grad-clip", type=float, default=0.5)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights used for validation/export")
    parser.add_argument("--frequency-weight", type=float, default=0.05)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--val-count", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers making degradations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this long; 0 = no limit")
    parser.add_argument("--schedule-minutes", type=float, default=0,
                        help="the whole run's planned training minutes over all its resumed calls: the cosine "
                             "schedule follows these (default: --max-minutes, i.e. this call alone)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt, or from OUT/carry.pt (the compact checkpoint carried "
                             "between GPU calls: weights only, the optimiser warms up again)")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from the weights of a facedeblur .onnx model or a .pt checkpoint (fine-tuning); "
                             "layers the new shape adds (more blocks) start as the identity")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    return parser
