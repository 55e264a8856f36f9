"""Quality metrics of a restored aligned crop against the clean one: PSNR, SSIM and identity similarity."""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..pipeline.identity import IdentityEmbedder, cosine_similarity

# Identical images have infinite PSNR; JSON cannot hold infinity and no real restoration gets near this.
PSNR_CEILING_DB = 100.0


def psnr(clean: np.ndarray, restored: np.ndarray) -> float:
    if np.array_equal(clean, restored):
        return PSNR_CEILING_DB
    return min(PSNR_CEILING_DB, float(peak_signal_noise_ratio(clean, restored, data_range=255)))


def ssim(clean: np.ndarray, restored: np.ndarray) -> float:
    return float(structural_similarity(clean, restored, channel_axis=2, data_range=255))


def identity_similarities(embedder: IdentityEmbedder, crops: list[np.ndarray], clean_embeddings: np.ndarray,
                          template: np.ndarray) -> np.ndarray:
    """SFace cosine similarity of each aligned crop to its clean face's embedding (row by row);
    about 0.8 or more means the same person, about 0.1 different people."""
    return cosine_similarity(embedder.embed_aligned(crops, template), clean_embeddings)
