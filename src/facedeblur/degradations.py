"""Synthetic degradations: what CCTV cameras and phones do to faces, reproducible from a seed.

Clean aligned faces are damaged here and the model learns to undo the damage (the denoising-autoencoder
idea). Written with NumPy/OpenCV rather than an augmentation library because evaluation needs the exact
blur kernel that was applied (for Wiener and Richardson-Lucy baselines), camera shake needs random
trajectories rather than straight lines, and no library has mosaic or video-codec block artefacts.
Everything runs on uint8 BGR images and needs no PyTorch, so `evaluate` works on a runtime install.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

CATEGORIES = (
    "motion_blur", "defocus", "gaussian_blur", "pixelate", "low_resolution",
    "noise", "jpeg", "codec_blocks", "low_light", "mixed",
)
BLUR_CATEGORIES = ("motion_blur", "defocus", "gaussian_blur")


@dataclass
class Degraded:
    image: np.ndarray  # uint8 BGR, same size as the clean input
    kernel: np.ndarray | None = None  # the blur kernel applied, when the damage is a single known blur
    steps: list[str] = field(default_factory=list)


# ---- blur kernels -------------------------------------------------------------------------------------

def camera_shake_kernel(rng: np.random.Generator, max_length: float = 17.0, size: int = 31) -> np.ndarray:
    """A hand-shake path: a random walk with momentum, drawn with sub-pixel weights and normalised."""
    length = rng.uniform(3.0, max_length)
    steps = 64
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity) + 1e-8
    position = np.zeros(2)
    path = [position.copy()]
    inertia = rng.uniform(0.6, 0.95)
    for _ in range(steps - 1):
        velocity = inertia * velocity + (1 - inertia) * rng.normal(size=2) * 1.5
        velocity /= np.linalg.norm(velocity) + 1e-8
        position = position + velocity * (length / steps)
        path.append(position.copy())
    points = np.array(path)
    points -= (points.max(0) + points.min(0)) / 2  # centre the path so the image does not shift
    kernel = np.zeros((size, size), np.float64)
    centre = size // 2
    for x, y in points + centre:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                kernel[y0 + dy, x0 + dx] += w
    return _trim_kernel(kernel / kernel.sum())


def defocus_kernel(radius: float) -> np.ndarray:
    """An anti-aliased disk (out-of-focus lens)."""
    size = int(np.ceil(radius)) * 2 + 3
    supersample = 8
    coords = (np.arange(size * supersample) + 0.5) / supersample - size / 2
    xx, yy = np.meshgrid(coords, coords)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    kernel = disk.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return _trim_kernel(kernel / kernel.sum())


def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """Isotropic or anisotropic Gaussian, rotated by `angle` radians."""
    radius = int(np.ceil(3 * max(sigma_x, sigma_y)))
    coords = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(coords, coords)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def _trim_kernel(kernel: np.ndarray) -> np.ndarray:
    """Cut empty borders but keep the kernel square, odd-sized and centred."""
    ys, xs = np.nonzero(kernel > 1e-6)
    centre = kernel.shape[0] // 2
    half = int(max(np.abs(ys - centre).max(), np.abs(xs - centre).max())) if ys.size else 0
    trimmed = kernel[centre - half:centre + half + 1, centre - half:centre + half + 1]
    return (trimmed / trimmed.sum()).astype(np.float32)


def apply_kernel(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    blurred = cv2.filter2D(image.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT101)
    return blurred


# ---- individual damages (float32 BGR in 0..255 in, out) --------------------------------------------------

def pixelate(image: np.ndarray, block: int) -> np.ndarray:
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // block), max(1, height // block)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def downscale(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(2, round(width / factor)), max(2, round(height / factor)))
    method = rng.choice([cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC])
    return cv2.resize(image, size, interpolation=int(method))


def upscale_to(image: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    method = rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC])
    return cv2.resize(image, (shape[1], shape[0]), interpolation=int(method))


def sensor_noise(image: np.ndarray, rng: np.random.Generator, sigma: float, colour: bool = True,
                 shot: float = 0.0) -> np.ndarray:
    """Read noise (Gaussian) plus optional shot noise whose variance grows with brightness."""
    shape = image.shape if colour else image.shape[:2] + (1,)
    noise = rng.normal(0.0, sigma, size=shape).astype(np.float32)
    if shot > 0:
        noise = noise + rng.normal(0.0, 1.0, size=image.shape).astype(np.float32) * np.sqrt(
            np.maximum(image, 0) * shot)
    return image + noise


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", np.clip(np.rint(image), 0, 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR).astype(np.float32)


def codec_blocks(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Video-codec-like damage: 4:2:0 chroma, 16x16 macroblocks with coarse DCT quantisation, and
    flat blocks (skipped macroblocks copied as their mean), the way low-bitrate H.264 CCTV streams look."""
    height, width = image.shape[:2]
    ycrcb = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_BGR2YCrCb).astype(np.float32)
    luma = ycrcb[:, :, 0]
    pad_h, pad_w = (-height) % 16, (-width) % 16
    padded = cv2.copyMakeBorder(luma, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT101)
    frequency = np.add.outer(np.arange(16), np.arange(16)).astype(np.float32)
    step = strength * (1.0 + frequency * 0.9)
    for y in range(0, padded.shape[0], 16):
        for x in range(0, padded.shape[1], 16):
            block = padded[y:y + 16, x:x + 16]
            if rng.random() < 0.15 * strength / 12:
                padded[y:y + 16, x:x + 16] = block.mean()
                continue
            coefficients = cv2.dct(block - 128.0)
            coefficients = np.round(coefficients / step) * step
            padded[y:y + 16, x:x + 16] = cv2.idct(coefficients) + 128.0
    ycrcb[:, :, 0] = padded[:height, :width]
    for channel in (1, 2):
        small = cv2.resize(ycrcb[:, :, channel], (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
        ycrcb[:, :, channel] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(np.clip(ycrcb, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2BGR).astype(np.float32)


def low_light(image: np.ndarray, rng: np.random.Generator, exposure: float) -> np.ndarray:
    """Underexposure, then sensor noise at the dark level, 8-bit quantisation, then the camera's gain
    brings the brightness back up, amplifying noise and banding."""
    dark = (np.clip(image, 0, 255) / 255.0) ** rng.uniform(1.0, 1.3) * 255.0 * exposure
    dark = sensor_noise(dark, rng, sigma=rng.uniform(1.0, 3.0), colour=True, shot=rng.uniform(0.05, 0.3))
    dark = np.round(np.clip(dark, 0, 255))
    gained = dark / exposure
    return gained


# ---- the categories ---------------------------------------------------------------------------------

def _finish(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def random_blur_kernel(kind: str, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    if kind == "motion_blur":
        return camera_shake_kernel(rng, max_length=17.0 * scale)
    if kind == "defocus":
        return defocus_kernel(rng.uniform(1.5, 4.5) * scale)
    sigma_x = rng.uniform(1.0, 3.5) * scale
    sigma_y = sigma_x * rng.uniform(0.5, 1.0) if rng.random() < 0.5 else sigma_x
    return gaussian_kernel(sigma_x, sigma_y, rng.uniform(0, np.pi))


def degrade(clean: np.ndarray, category: str, rng: np.random.Generator) -> Degraded:
    """Apply one category of damage to a clean uint8 BGR face crop (sized for a 128 px working crop)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown degradation {category!r}; choose from {', '.join(CATEGORIES)}")
    image = clean.astype(np.float32)
    scale = clean.shape[0] / 128.0  # severities are defined for a 128 px crop
    if category in BLUR_CATEGORIES:
        kernel = random_blur_kernel(category, rng, scale)
        blurred = apply_kernel(image, kernel)
        noisy = sensor_noise(blurred, rng, sigma=rng.uniform(0.5, 2.0))  # every real camera adds a little
        return Degraded(_finish(noisy), kernel, [category])
    if category == "pixelate":
        block = int(rng.integers(3, 9) * scale) or 1
        return Degraded(_finish(pixelate(image, block)), None, [f"pixelate {block}px"])
    if category == "low_resolution":
        factor = float(rng.uniform(2.0, 8.0))
        small = downscale(image, factor, rng)
        return Degraded(_finish(upscale_to(small, clean.shape[:2], rng)), None, [f"downscale x{factor:.1f}"])
    if category == "noise":
        sigma = float(rng.uniform(8.0, 30.0))
        colour = bool(rng.random() < 0.7)
        return Degraded(_finish(sensor_noise(image, rng, sigma, colour)), None, [f"noise sigma {sigma:.0f}"])
    if category == "jpeg":
        quality = int(rng.integers(8, 35))
        return Degraded(_finish(jpeg(image, quality)), None, [f"jpeg q{quality}"])
    if category == "codec_blocks":
        strength = float(rng.uniform(6.0, 20.0))
        return Degraded(_finish(codec_blocks(image, rng, strength)), None, [f"codec q{strength:.0f}"])
    if category == "low_light":
        exposure = float(rng.uniform(0.08, 0.3))
        return Degraded(_finish(low_light(image, rng, exposure)), None, [f"low light x{exposure:.2f}"])
    return camera_pipeline(clean, rng)


def camera_pipeline(clean: np.ndarray, rng: np.random.Generator, severity: float = 1.0) -> Degraded:
    """A random mixture in the order cameras apply it: optics/motion blur -> sensor sampling (low
    resolution) -> exposure and noise -> compression -> display upscaling; mosaic (privacy filters)
    sometimes last."""
    image = clean.astype(np.float32)
    scale = clean.shape[0] / 128.0
    steps: list[str] = []
    kernel = None
    if rng.random() < 0.7:
        kind = str(rng.choice(BLUR_CATEGORIES, p=[0.45, 0.25, 0.30]))
        kernel = random_blur_kernel(kind, rng, scale * severity)
        image = apply_kernel(image, kernel)
        steps.append(kind)
    factor = 1.0
    if rng.random() < 0.6:
        factor = float(rng.uniform(1.5, 1.5 + 4.5 * severity))
        image = downscale(image, factor, rng)
        steps.append(f"downscale x{factor:.1f}")
    if rng.random() < 0.2:
        exposure = float(rng.uniform(0.1, 0.4))
        image = low_light(image, rng, exposure)
        steps.append("low light")
    if rng.random() < 0.7:
        image = sensor_noise(image, rng, sigma=float(rng.uniform(1.0, 15.0 * severity)), colour=bool(rng.random() < 0.7))
        steps.append("noise")
    choice = rng.random()
    if choice < 0.45:
        image = jpeg(image, int(rng.integers(15, 80)))
        steps.append("jpeg")
    elif choice < 0.7:
        image = codec_blocks(image, rng, float(rng.uniform(4.0, 14.0)))
        steps.append("codec")
    if factor > 1.0:
        image = upscale_to(image, clean.shape[:2], rng)
    if rng.random() < 0.08:
        block = int(rng.integers(3, 7) * scale) or 1
        image = pixelate(image, block)
        steps.append("pixelate")
    if not steps:
        image = sensor_noise(image, rng, sigma=float(rng.uniform(3.0, 10.0)))
        steps.append("noise")
    only_blur = kernel is not None and len(steps) == 1
    return Degraded(_finish(image), kernel if only_blur else None, steps)


def training_degradation(clean: np.ndarray, rng: np.random.Generator) -> Degraded:
    """What the trainer uses: half single categories (so each is learnt), half camera-like mixtures."""
    if rng.random() < 0.5:
        return degrade(clean, str(rng.choice(CATEGORIES[:-1])), rng)
    return camera_pipeline(clean, rng)
