"""Regularised (Wiener-style) deconvolution inside the network, with the DFT written as matrix products.

Why matrix products and not `torch.fft`: the ONNX exporter the project uses (TorchScript, opset 17) has no
FFT, and onnxruntime's DFT operator is slower on a CPU than four small matrix products at face-crop
sizes. The DFT matrices are built in the graph from the input's own size, so the exported model keeps
its dynamic height and width.

A real image has a Hermitian spectrum, so only the first M_w // 2 + 1 columns of it are computed: the
forward transform takes the real width axis first and the inverse gives back a real width axis last, which
halves the matrix products (the same numbers as the full transform, to float32 rounding).

The inverse is regularised with a gradient prior (lambda * |D|^2, the classic smoothness-regularised
inverse), which rings far less than a constant-lambda Wiener filter; lambda itself comes from the kernel
estimator, so the network chooses how hard to deconvolve each face (noisier faces get a larger lambda).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def dft_matrices(size: int | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and -sin of 2*pi*m*k/size: the real and imaginary parts of the DFT matrix.

    m*k is reduced modulo `size` in integers first, so the angles stay in [0, 2*pi) and float32 keeps
    its precision at any crop size."""
    index = torch.arange(size, device=device)
    phase = torch.remainder(index[:, None] * index[None, :], size).float() * (2 * math.pi / size)
    return torch.cos(phase), -torch.sin(phase)


def kernel_spectrum(kernel: torch.Tensor, cos_h: torch.Tensor, sin_h: torch.Tensor, cos_w: torch.Tensor,
                    sin_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The DFT of (N, K, K) kernels centred at the origin of an (M_h, M_w) periodic grid, as (real, imag), at
    the frequency columns that cos_w and sin_w hold (M_w rows each).

    Only the K rows/columns of the DFT matrices at offsets -K//2..K//2 are needed, so the kernel is never
    padded to the full grid."""
    size = kernel.shape[-1]
    offsets_h = torch.remainder(torch.arange(size, device=kernel.device) - size // 2, cos_h.shape[0])
    offsets_w = torch.remainder(torch.arange(size, device=kernel.device) - size // 2, cos_w.shape[0])
    left_c, left_s = cos_h[:, offsets_h], sin_h[:, offsets_h]            # (M_h, K)
    right_c, right_s = cos_w[offsets_w, :], sin_w[offsets_w, :]          # (K, M_w)
    first_real, first_imag = left_c @ kernel, left_s @ kernel            # (N, M_h, K)
    real = first_real @ right_c - first_imag @ right_s
    imag = first_real @ right_s + first_imag @ right_c
    return real, imag


def regularised_deconvolution(image: torch.Tensor, kernel: torch.Tensor, regularisation: torch.Tensor) -> torch.Tensor:
    """Deconvolve (N, C, H, W) images in [0, 1] blurred by (N, K, K) correlation kernels (each summing to 1),
    with a per-image regularisation weight (N,). Runs in float32 whatever autocast says: a bf16 DFT is useless."""
    with torch.autocast(image.device.type, enabled=False):
        image, kernel, regularisation = image.float(), kernel.float(), regularisation.float()
        pad = kernel.shape[-1] // 2
        height, width = image.shape[-2], image.shape[-1]
        padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
        padded_width = padded.shape[-1]
        cos_h, sin_h = dft_matrices(padded.shape[-2], image.device)
        cos_w, sin_w = dft_matrices(padded_width, image.device)
        half = padded_width // 2 + 1
        cos_half, sin_half = cos_w[:, :half], sin_w[:, :half]                   # (M_w, half)
        # forward DFT: the width axis of the real image first (half the columns), then the height axis
        right_real, right_imag = padded @ cos_half, padded @ sin_half
        spectrum_real = cos_h @ right_real - sin_h @ right_imag
        spectrum_imag = cos_h @ right_imag + sin_h @ right_real
        kernel_real, kernel_imag = kernel_spectrum(kernel, cos_h, sin_h, cos_half, sin_half)
        kernel_real, kernel_imag = kernel_real[:, None], kernel_imag[:, None]
        # |D|^2 of the forward-difference gradient: 4 - 2 cos(w_y) - 2 cos(w_x)
        smoothness = 4 - 2 * cos_h[:, 1:2] - 2 * cos_half[1:2, :]
        denominator = kernel_real ** 2 + kernel_imag ** 2 + regularisation[:, None, None, None] * smoothness + 1e-4
        # The kernels are correlation kernels, as degradations.apply_kernel (cv2.filter2D) applies them: the
        # blur's transfer function is conj(K), and its regularised inverse K X / denominator.
        out_real = (kernel_real * spectrum_real - kernel_imag * spectrum_imag) / denominator
        out_imag = (kernel_real * spectrum_imag + kernel_imag * spectrum_real) / denominator
        # inverse DFT along the height axis: (C_h - iS_h) Y
        back_real = cos_h @ out_real + sin_h @ out_imag
        back_imag = cos_h @ out_imag - sin_h @ out_real
        # then the real width axis from half the columns: each column but 0 and M_w / 2 stands for its mirror too
        column = torch.arange(half, device=image.device)
        weight = (2 - (column == 0).float() - (2 * column == padded_width).float())[:, None]
        restored = (back_real @ (weight * cos_w[:half, :]) + back_imag @ (weight * sin_w[:half, :]))
        restored = restored / (padded.shape[-2] * padded_width)
        return restored[..., pad:pad + height, pad:pad + width]
