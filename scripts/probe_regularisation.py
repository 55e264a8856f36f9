#!/usr/bin/env python3
"""Is the kernel-aware restorer's deconvolution regularised as strongly as it should be? Restores the
trainer's validation faces (every category x tier) with the regularisation weight the estimator chooses, and
with that weight scaled, and prints the PSNR gain of each per case.

    .venv/bin/python scripts/probe_regularisation.py CHECKPOINT.pt [--data ~/facedeblur-campaign/faces128]
        [--faces 990] [--scales 1 0.5 0.3]

A scale below 1 that gains in a case says the estimator regularises too much there (and above 1, too little).
The U-Net was trained with the estimator's own choice, so this probes the estimator; it is not a setting.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from facedeblur.trainer.arch import build_model, exported_weights  # noqa: E402
from facedeblur.trainer.dataset import load_split  # noqa: E402
from facedeblur.trainer.losses import psnr  # noqa: E402
from facedeblur.trainer.train import ValidationSet  # noqa: E402

BATCH = 33


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a trainer checkpoint (last.pt or carry.pt) of a kernel-aware model")
    parser.add_argument("--data", type=Path, default=Path.home() / "facedeblur-campaign" / "faces128",
                        help="the prepared cache (its validation split is used)")
    parser.add_argument("--faces", type=int, default=990, help="validation faces (a multiple of 33 covers every case evenly)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.3])
    parser.add_argument("--seed", type=int, default=777, help="damage seed (the trainer's own validation uses 1234)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if "kernel_size" not in checkpoint["model_config"]:
        raise SystemExit(f"{args.checkpoint}: not a kernel-aware model (no kernel estimator to probe)")
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(exported_weights(checkpoint))
    model.eval()
    crops, _ = load_split(args.data, "val")
    validation = ValidationSet(crops, args.faces, seed=args.seed)
    degraded, clean = validation.degraded, validation.clean
    gains: dict[float, dict[str, float]] = {}
    with torch.no_grad():
        estimates = [model.estimator(degraded[i:i + BATCH]) for i in range(0, len(degraded), BATCH)]
        input_psnr = psnr(degraded, clean)
        for scale in args.scales:
            outputs = []
            for start, (kernel, weight) in zip(range(0, len(degraded), BATCH), estimates):
                faces = degraded[start:start + BATCH]
                deconvolved = model.deconvolve(faces, kernel, weight * scale)
                outputs.append(model.restorer(torch.cat([faces, deconvolved], dim=1)).clamp(0, 1))
            per_face = psnr(torch.cat(outputs), clean) - input_psnr
            by_case: dict[str, list[float]] = {}
            for gain, case in zip(per_face.tolist(), validation.categories):
                by_case.setdefault(case, []).append(gain)
            gains[scale] = {case: float(np.mean(values)) for case, values in sorted(by_case.items())}
            gains[scale]["all"] = float(per_face.mean())
    print("case".ljust(24) + "".join(f"x{scale:g}".rjust(9) for scale in args.scales) + "   (PSNR gain, dB)")
    for case in gains[args.scales[0]]:
        print(case.ljust(24) + "".join(f"{gains[scale][case]:+9.3f}" for scale in args.scales))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
