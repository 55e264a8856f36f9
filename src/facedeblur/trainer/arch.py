"""The restorer: a small residual U-Net (a denoising autoencoder with skip connections).

Fully convolutional, plain Conv/ReLU/Add/Resize operations only, so the ONNX export runs fast in
onnxruntime on a CPU. The last convolution starts at zero: an untrained model returns its input
unchanged, and training only learns the correction.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])


class FaceRestorerNet(nn.Module):
    """Encoder-decoder over `levels` scales; widths double at each downsampling.

    With `unshuffle` 2 the network works at half resolution from the start (pixel unshuffle/shuffle,
    lossless rearrangements), which makes it about four times cheaper on a CPU for the same width.
    Height and width must be multiples of unshuffle * 2**levels (16 for the defaults; crops are 128).
    """

    def __init__(self, width: int = 16, levels: int = 3, blocks_per_level: int = 1, middle_blocks: int = 2,
                 unshuffle: int = 1):
        super().__init__()
        self.config = dict(width=width, levels=levels, blocks_per_level=blocks_per_level, middle_blocks=middle_blocks,
                           unshuffle=unshuffle)
        widths = [width * 2 ** i for i in range(levels + 1)]
        self.unshuffle = unshuffle
        self.head = nn.Conv2d(3 * unshuffle ** 2, width, 3, padding=1)
        self.encoders = nn.ModuleList(_stage(widths[i], blocks_per_level) for i in range(levels))
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels))
        self.middle = _stage(widths[levels], middle_blocks)
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
        features = self.middle(features)
        for up, decoder, skip in zip(reversed(self.ups), reversed(self.decoders), reversed(skips)):
            features = F.interpolate(up(features), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = decoder(features + skip)
        correction = self.tail(features)
        if self.unshuffle > 1:
            correction = F.pixel_shuffle(correction, self.unshuffle)
        return x + correction


def build_model(config: dict | None = None) -> FaceRestorerNet:
    return FaceRestorerNet(**(config or {}))


def exported_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stands for (its EMA, else its live weights) as float32: what export,
    fine-tuning (--init) and the compact resume load. carry.pt holds them in float16."""
    state = checkpoint.get("ema") or checkpoint["model"]
    return {name: tensor.float() for name, tensor in state.items()}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
