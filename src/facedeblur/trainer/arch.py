"""The restorer: a small residual U-Net (a denoising autoencoder with skip connections), and its
kernel-aware form, which also sees the face deconvolved by a blur kernel it estimates itself.

Fully convolutional, plain Conv/ReLU/Add/Resize/MatMul operations only, so the ONNX export runs fast in
onnxruntime on a CPU. The last convolution starts at zero: an untrained model returns its input
unchanged, and training only learns the correction.
"""
from __future__ import annotations

import json

import torch
from torch import nn
from torch.nn import functional as F

from .deconvolution import dft_matrices, regularised_deconvolution


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FrequencyMixing(nn.Module):
    """Global mixing at the bottleneck: 1x1 convolutions over the feature map's 2-D spectrum, so each output
    position sees the whole face at once. Camera shake spreads a detail over up to 24 px, wider than the
    few 3x3 layers at the bottleneck reach; in the spectrum that spread is local, per frequency.

    The DFT is written as matrix products built from the map's own size (see deconvolution.py), so the
    ONNX graph keeps dynamic sizes. The last convolution starts at zero: the block starts as the identity,
    and a model initialised from one without it computes the same output."""

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 1), nn.LeakyReLU(0.1, inplace=True),
                                 nn.Conv2d(2 * channels, 2 * channels, 1))
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            features = x.float()
            cos_h, sin_h = dft_matrices(features.shape[-2], x.device)
            cos_w, sin_w = dft_matrices(features.shape[-1], x.device)
            # orthonormal both ways, so the mixing sees the same scale at any crop size; the size is read off
            # the matrices (row 0 is all ones) because a Python number would be frozen into the exported graph
            scale = torch.rsqrt(cos_h[0].sum() * cos_w[0].sum())
            left_real, left_imag = cos_h @ features, sin_h @ features
            real = (left_real @ cos_w - left_imag @ sin_w) * scale
            imag = (left_real @ sin_w + left_imag @ cos_w) * scale
        mixed_real, mixed_imag = self.mix(torch.cat([real, imag], dim=1).to(x.dtype)).float().chunk(2, dim=1)
        with torch.autocast(x.device.type, enabled=False):
            back_real = cos_h @ mixed_real + sin_h @ mixed_imag
            back_imag = cos_h @ mixed_imag - sin_h @ mixed_real
            spatial = (back_real @ cos_w + back_imag @ sin_w) * scale
        return x + spatial.to(x.dtype)


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])


class FaceRestorerNet(nn.Module):
    """Encoder-decoder over `levels` scales; widths double at each downsampling.

    With `unshuffle` 2 the network works at half resolution from the start (pixel unshuffle/shuffle,
    lossless rearrangements), which makes it about four times cheaper on a CPU for the same width.
    Height and width must be multiples of unshuffle * 2**levels (16 for the defaults; crops are 128).
    """

    def __init__(self, width: int = 16, levels: int = 3, blocks_per_level: int = 1, middle_blocks: int = 2,
                 unshuffle: int = 1, in_channels: int = 3, frequency_mixing: bool = False):
        super().__init__()
        self.config = dict(width=width, levels=levels, blocks_per_level=blocks_per_level, middle_blocks=middle_blocks,
                           unshuffle=unshuffle)
        if frequency_mixing:
            self.config["frequency_mixing"] = True
        widths = [width * 2 ** i for i in range(levels + 1)]
        self.unshuffle = unshuffle
        # Channels past the first three are guidance (the deconvolved face); the output corrects the first three.
        self.head = nn.Conv2d(in_channels * unshuffle ** 2, width, 3, padding=1)
        self.encoders = nn.ModuleList(_stage(widths[i], blocks_per_level) for i in range(levels))
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels))
        self.middle = _stage(widths[levels], middle_blocks)
        self.frequency = FrequencyMixing(widths[levels]) if frequency_mixing else nn.Identity()
        self.ups = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(levels))
        self.decoders = nn.ModuleList(_stage(widths[i], blocks_per_level) for i in range(levels))
        self.tail = nn.Conv2d(width, 3 * unshuffle ** 2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.multiple = unshuffle * 2 ** levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            features = encoder(features)
            skips.append(features)
            features = down(features)
        features = self.frequency(self.middle(features))
        for up, decoder, skip in zip(reversed(self.ups), reversed(self.decoders), reversed(skips)):
            features = F.interpolate(up(features), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = decoder(features + skip)
        correction = self.tail(features)
        if self.unshuffle > 1:
            correction = F.pixel_shuffle(correction, self.unshuffle)
        return x[:, :3] + correction


class KernelEstimator(nn.Module):
    """Estimates the blur kernel of a face crop (a kernel_size^2 map that sums to 1, through a softmax, so
    it can be exactly a delta when there is no blur) and how strongly to regularise its inverse.

    Blur is the same over the whole crop, so local evidence (edge profiles) is pooled globally (mean and
    standard deviation of the features) before a small MLP maps it to the kernel: any input size works."""

    def __init__(self, kernel_size: int = 33, width: int = 32):
        super().__init__()
        self.kernel_size = kernel_size
        widths = [width, width, width * 2, width * 3, width * 4]
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        for before, after in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(before, after, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
                       nn.Conv2d(after, after, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        self.features = nn.Sequential(*layers)
        # LayerNorm on the pooled evidence: without it the pooled statistics grow with training until the
        # softmax saturates and the estimate freezes at one kernel for every face
        self.mlp = nn.Sequential(nn.LayerNorm(widths[-1] * 2), nn.Linear(widths[-1] * 2, 256), nn.LeakyReLU(0.1, inplace=True),
                                 nn.Linear(256, kernel_size * kernel_size + 1))
        with torch.no_grad():
            # Start at a small Gaussian blur (sigma 2 px) with mild regularisation: far from a saturated
            # softmax, so every kernel weight can still learn (a near-delta start would barely move). The
            # U-Net's weights for the deconvolved channels start at zero, so this start changes no output.
            self.mlp[-1].weight.mul_(0.01)
            offsets = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
            squared_radius = offsets[:, None] ** 2 + offsets[None, :] ** 2
            self.mlp[-1].bias[:-1] = (-squared_radius / (2 * 2.0 ** 2)).flatten()
            self.mlp[-1].bias[-1] = -4.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x * 2 - 1)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.std(dim=(2, 3))], dim=1)
        out = self.mlp(pooled)
        # Bounded logits (a gap of at most 12): a delta stays reachable (99.3 % of the weight in the centre)
        # but the gap cannot run away into a saturated softmax whose gradient has vanished.
        logits = 6 * torch.tanh(out[:, :-1].float() / 6)
        kernel = torch.softmax(logits, dim=1).view(-1, self.kernel_size, self.kernel_size)
        regularisation = torch.exp(out[:, -1].float().clamp(-12, 2))
        return kernel, regularisation


class KernelAwareRestorer(nn.Module):
    """The U-Net given both the damaged face and the face deconvolved with the estimated kernel.

    `forward(x)` is what ships (one ONNX graph, input and output as before). Training and evaluation can
    pass `kernel` to deconvolve with another kernel instead of the estimate (the true kernel measures the
    ceiling; a perturbed true kernel teaches the network to distrust a wrong one)."""

    def __init__(self, kernel_size: int = 33, estimator_width: int = 32, **unet: int):
        super().__init__()
        self.config = dict(unet, kernel_size=kernel_size, estimator_width=estimator_width)
        self.estimator = KernelEstimator(kernel_size, estimator_width)
        self.restorer = FaceRestorerNet(**unet, in_channels=6)
        self.multiple = self.restorer.multiple

    def deconvolve(self, x: torch.Tensor, kernel: torch.Tensor, regularisation: torch.Tensor) -> torch.Tensor:
        return regularised_deconvolution(x, kernel, regularisation).clamp(-0.5, 1.5).to(x.dtype)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor | None = None, use_given: torch.Tensor | None = None,
                return_estimate: bool = False):
        """`kernel` (N, K, K) replaces the estimate for every face, or only where `use_given` (N,) is set.
        With `return_estimate`, returns (restored, estimated kernel): training needs the estimate for its
        own loss (keyword arguments, so DistributedDataParallel passes them through)."""
        estimated, regularisation = self.estimator(x)
        chosen = estimated
        if kernel is not None:
            chosen = kernel if use_given is None else torch.where(use_given[:, None, None], kernel, estimated)
            # The regularisation learns only from faces deconvolved with the estimate, the kernel that ships:
            # a substituted (perturbed) kernel pulls it up, too strong for the estimates of defocus and
            # Gaussian blur (docs/BENCHMARKS.md, "Faces cut off their alignment").
            regularisation = (regularisation.detach() if use_given is None
                              else torch.where(use_given, regularisation.detach(), regularisation))
        restored = self.restorer(torch.cat([x, self.deconvolve(x, chosen, regularisation)], dim=1))
        return (restored, estimated) if return_estimate else restored


def build_model(config: dict | None = None) -> nn.Module:
    config = dict(config or {})
    if "kernel_size" in config:
        return KernelAwareRestorer(**config)
    return FaceRestorerNet(**config)


def exported_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stands for (its EMA, else its live weights) as float32: what export,
    fine-tuning (--init) and the compact resume load. carry.pt holds them in float16."""
    state = checkpoint.get("ema") or checkpoint["model"]
    return {name: tensor.float() for name, tensor in state.items()}


def onnx_model_record(proto) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and the bookkeeping of an exported model (a loaded ONNX proto), under the keys a training
    checkpoint uses: the exporter keeps the weights as the graph's initialisers, by their PyTorch names, and
    the record in the metadata. `format` is the metadata's format marker (None in an ONNX file facedeblur
    did not write), `model_config` is empty where the metadata has none."""
    from onnx import numpy_helper

    metadata = {entry.key: entry.value for entry in proto.metadata_props}

    def recorded(key: str, default):
        return json.loads(metadata[key]) if metadata.get(key) else default

    weights = {tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy()) for tensor in proto.graph.initializer}
    return weights, {
        "format": metadata.get("format"),
        "model_config": recorded("model_config", {}),
        "version": metadata.get("version"),
        "training_summary": recorded("training", {}),
        "metrics": recorded("metrics", {}),
        "training_data": metadata.get("training_data", "unknown"),
        "crop_size": int(metadata.get("crop_size", 128)),
    }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
