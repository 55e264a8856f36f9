"""Fidelity losses only (no adversarial term): Charbonnier on pixels plus an L1 on Fourier amplitudes,
which rewards recovering the fine detail that a pure pixel loss lets the model smooth away."""
from __future__ import annotations

import torch


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((output - target) ** 2 + eps * eps).mean()


def frequency_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out_f = torch.fft.rfft2(output.float(), norm="ortho")
    tgt_f = torch.fft.rfft2(target.float(), norm="ortho")
    return (out_f - tgt_f).abs().mean()


def restoration_loss(output: torch.Tensor, target: torch.Tensor, frequency_weight: float = 0.05) -> torch.Tensor:
    return charbonnier(output, target) + frequency_weight * frequency_l1(output, target)


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for tensors in [0, 1]."""
    mse = ((output.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
