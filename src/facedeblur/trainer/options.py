"""The `train run` options, kept free of PyTorch imports so the CLI starts fast on any install."""
from __future__ import annotations

import argparse

# The two shipped sizes (issue 9), one home for their shapes (trainer/arch.py builds them): `train run
# --size` starts from these and the GPU driver (scripts/gpu_train.sh) names them. Here, not in arch.py,
# so that the CLI lists them without importing PyTorch. Faces/s are untrained ONNX exports on this
# project's 2-core CPU through onnxruntime (batch 64), measured 2026-11-24:
#   default: 3.65 M parameters, 14.6 MB, about 100 faces/s (the budget is 50). Width, levels and unshuffle
#            are those of 0.2.0, so `--init` starts from the shipped weights; the extra blocks start as
#            the identity.
#   quality: 4.13 M parameters, 16.5 MB, about 23 faces/s: full resolution inside (no unshuffle), for GPU
#            servers, where it costs little; few parameters for its compute, so its checkpoint stays
#            small enough to carry between GPU calls.
MODEL_SIZES = {
    "default": dict(width=24, levels=3, blocks_per_level=2, middle_blocks=4, unshuffle=2),
    "quality": dict(width=32, levels=3, blocks_per_level=2, middle_blocks=2, unshuffle=1),
    # 0.2.0's U-Net given the face deconvolved with its own kernel estimate as three more input channels
    # (arch.KernelAwareRestorer); `--init` from a plain U-Net of this shape starts it exactly where that
    # model is (the new inputs' weights start at zero). Kernels up to 33 px cover the severe tier's camera
    # shake (24 px).
    "kernel-aware": dict(width=24, levels=3, blocks_per_level=1, middle_blocks=2, unshuffle=2, kernel_size=33,
                         estimator_width=32),
    # the same with a global frequency-mixing block at the bottleneck (arch.FrequencyMixing): the shipped
    # model's design since 0.3.0, trained by scripts/campaign
    "kernel-aware-frequency": dict(width=24, levels=3, blocks_per_level=1, middle_blocks=2, unshuffle=2,
                                   kernel_size=33, estimator_width=32, frequency_mixing=True),
    # the same, twice as deep (two residual blocks per level, four in the middle): 4.77 M parameters, 62-66
    # faces/s against 85 for kernel-aware-frequency on the same 2-core CPU, and a training step about 1.35 s
    # against 0.85 (float32, batch 16). The campaign grew into it from its kernel-aware-frequency checkpoint
    # (`--init`: the added blocks start as the identity) when that network had plateaued (MODEL_CARD.md,
    # campaign log, thirteenth session)
    "kernel-aware-deep": dict(width=24, levels=3, blocks_per_level=2, middle_blocks=4, unshuffle=2,
                              kernel_size=33, estimator_width=32, frequency_mixing=True),
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="Train the facedeblur restorer.")
    parser.add_argument("--data", required=True,
                        help="cache folder made by 'facedeblur train prepare', or a pack made by 'facedeblur train pack'")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, validation grids, log")
    parser.add_argument("--size", choices=tuple(MODEL_SIZES), default="default",
                        help="the model's shape (MODEL_SIZES in trainer/options.py); the options below override "
                             "parts of it")
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
    parser.add_argument("--kernel-weight", type=float, default=1.0,
                        help="weight of the kernel estimator's own loss (the face blurred by the estimate against "
                             "it blurred by the true kernel, RMS), kernel-aware models")
    parser.add_argument("--kernel-substitute", type=float, default=0.3,
                        help="share of faces with a known kernel deconvolved with a perturbed true kernel instead "
                             "of the estimate, so the network learns how far to trust the deconvolution")
    parser.add_argument("--misalign", type=float, default=0.5,
                        help="share of faces cut a little off the alignment first (degradations.misalign), as "
                             "faces found on damaged footage are; the rest stay exactly aligned")
    parser.add_argument("--identity-weight", type=float, default=0.0,
                        help="weight of the SFace identity loss (1 - cosine similarity); 0 = off")
    parser.add_argument("--identity-faces", type=int, default=2,
                        help="faces of each batch that get the identity loss (it costs about 0.2 s a face on a CPU)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="bf16 autocast with channels-last: auto = on a GPU, and on a CPU with native bf16 "
                             "(AVX512-BF16 or AMX)")
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
