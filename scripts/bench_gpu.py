#!/usr/bin/env python
"""Restorer throughput on a GPU, measured with PyTorch as a proxy for onnxruntime-gpu.

    python3 scripts/bench_gpu.py [--checkpoints runs/gpu] [--device cuda] [--seconds 3] [--out FILE]

Runs on the lent GPU machine (scripts/gpu_train.sh calls it), where the onnxruntime-gpu wheel is too
large to carry: the same networks (trainer/arch.py, both shipped sizes) in PyTorch on CUDA, fp16 and
bf16, channels-last, batch 1, 8 and 64 of 128 px aligned crops, timed in batches of 10 calls after
warm-up, each ended by a CUDA synchronise.
The model is the one in CHECKPOINTS/<size>/last.pt or carry.pt when present (its shape and weights),
else the size's shape from MODEL_SIZES with untrained weights (speed does not depend on them).
Prints a markdown table (and writes it to --out); on a machine without CUDA, `--device cpu` checks the
script itself (bf16 only, slow).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from facedeblur.trainer.arch import build_model, count_parameters  # noqa: E402
from facedeblur.trainer.export import load_checkpoint_model  # noqa: E402
from facedeblur.trainer.options import MODEL_SIZES  # noqa: E402

BATCH_SIZES = (1, 8, 64)
CROP_SIZE = 128


def trained_or_fresh(size: str, folder: Path) -> tuple[torch.nn.Module, str]:
    """The model as trained (its checkpoint's shape and weights), else MODEL_SIZES' shape, untrained."""
    for path in (folder / "last.pt", folder / "carry.pt"):
        if path.is_file():
            model, checkpoint = load_checkpoint_model(path)
            return model, f"{path} (step {checkpoint.get('step', '?')})"
    return build_model(MODEL_SIZES[size]), "untrained weights (speed does not depend on them)"


def faces_per_second(model: torch.nn.Module, batch: int, dtype: torch.dtype, device: torch.device,
                     seconds: float) -> float:
    x = torch.rand(batch, 3, CROP_SIZE, CROP_SIZE, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
        for _ in range(5):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(rates) < 3:
            started = time.perf_counter()
            for _ in range(10):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(10 * batch / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, default=REPO / "runs" / "gpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per (size, dtype, batch)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16} if device.type == "cuda" else {"bf16": torch.bfloat16}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"Device: {name}; PyTorch {torch.__version__} (a proxy for onnxruntime-gpu); channels-last, "
             f"autocast, {CROP_SIZE} px crops; median of {args.seconds:g} s per cell.", "",
             "| model | parameters | weights | dtype | " + " | ".join(f"faces/s, batch {b}" for b in args.batch_sizes)
             + " |", "|---|---|---|---|" + "---|" * len(args.batch_sizes)]
    for size in MODEL_SIZES:
        model, source = trained_or_fresh(size, args.checkpoints / size)
        model = model.eval().to(device, memory_format=torch.channels_last)
        for label, dtype in dtypes.items():
            rates = [faces_per_second(model, batch, dtype, device, args.seconds) for batch in args.batch_sizes]
            lines.append(f"| {size} | {count_parameters(model) / 1e6:.2f} M | {source} | {label} | "
                         + " | ".join(f"{rate:,.0f}" for rate in rates) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
