"""Classical restorations a user could pick instead of our model: the baselines of `facedeblur evaluate`.

All take and return aligned BGR uint8 crops. Wiener and Richardson-Lucy are given the true blur kernel,
an advantage no real user has, so they are an upper bound for non-blind deconvolution.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage import restoration

UNSHARP_SIGMA = 2.0
UNSHARP_AMOUNT = 1.0
# Wiener's balance is the noise-to-signal ratio it assumes. The blur categories add sensor noise with
# sigma 0.5..2 levels; on AAF faces 0.02 is near the best fixed value for all three blurs (0.003 rings
# on camera shake, 0.1 leaves Gaussian blur soft).
WIENER_BALANCE = 0.02
# Richardson-Lucy amplifies noise as iterations grow: on AAF faces with the blur categories' noise,
# PSNR peaks at about 10-20 iterations; 12 keeps it near the peak and costs ~3 ms per channel pass.
RICHARDSON_LUCY_ITERATIONS = 12
NL_MEANS_MIN_STRENGTH = 3.0
NL_MEANS_TEMPLATE_WINDOW = 7
NL_MEANS_SEARCH_WINDOW = 15  # 21 (OpenCV's default) costs twice the time for the same PSNR on 128 px crops

CLASSICAL_METHODS = ("unsharp_mask", "wiener", "richardson_lucy", "nl_means")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def unsharp_mask(image: np.ndarray, sigma: float = UNSHARP_SIGMA, amount: float = UNSHARP_AMOUNT) -> np.ndarray:
    """The sharpening filter every photo editor has: add back the difference to a blurred copy."""
    image_f = image.astype(np.float32)
    blurred = cv2.GaussianBlur(image_f, (0, 0), sigma)
    return _to_uint8(image_f + amount * (image_f - blurred))


def _deconvolve_per_channel(image: np.ndarray, kernel: np.ndarray, deconvolve) -> np.ndarray:
    """Reflect-pad by the kernel size first: both methods assume a periodic (FFT) or zero border,
    which would otherwise ring along the crop's edges and dominate PSNR."""
    pad = int(max(kernel.shape))
    scaled = image.astype(np.float64) / 255.0
    padded = np.pad(scaled, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # degradations.apply_kernel blurs with cv2.filter2D, a correlation; scikit-image deconvolves a
    # convolution, whose PSF is the kernel turned by 180 degrees (the same for symmetric blurs, not for shake)
    psf = np.asarray(kernel, np.float64)[::-1, ::-1] / float(np.sum(kernel))
    channels = [deconvolve(padded[:, :, c], psf)[pad:-pad, pad:-pad] for c in range(image.shape[2])]
    return _to_uint8(np.stack(channels, axis=-1) * 255.0)


def wiener(image: np.ndarray, kernel: np.ndarray, balance: float = WIENER_BALANCE) -> np.ndarray:
    return _deconvolve_per_channel(image, kernel, lambda channel, psf: restoration.wiener(channel, psf, balance))


def richardson_lucy(image: np.ndarray, kernel: np.ndarray, iterations: int = RICHARDSON_LUCY_ITERATIONS) -> np.ndarray:
    return _deconvolve_per_channel(
        image, kernel, lambda channel, psf: restoration.richardson_lucy(channel, psf, num_iter=iterations))


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise level in grey levels (Immerkaer's fast estimate: a Laplacian-difference filter that
    cancels smooth image content, then the mean absolute response)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    response = cv2.filter2D(grey, -1, mask, borderType=cv2.BORDER_REFLECT101)[1:-1, 1:-1]
    height, width = grey.shape
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6.0 * (width - 2) * (height - 2)))


def nl_means(image: np.ndarray) -> np.ndarray:
    """OpenCV's colour non-local means, its strength set from the estimated noise as a user would tune it."""
    strength = max(NL_MEANS_MIN_STRENGTH, estimate_noise_sigma(image))
    return cv2.fastNlMeansDenoisingColored(image, None, strength, strength, NL_MEANS_TEMPLATE_WINDOW,
                                           NL_MEANS_SEARCH_WINDOW)


def classical_restorations(image: np.ndarray, kernel: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every classical method that applies: deconvolution only when the true kernel is known."""
    results = {"unsharp_mask": unsharp_mask(image)}
    if kernel is not None:
        results["wiener"] = wiener(image, kernel)
        results["richardson_lucy"] = richardson_lucy(image, kernel)
    results["nl_means"] = nl_means(image)
    return {name: results[name] for name in CLASSICAL_METHODS if name in results}
