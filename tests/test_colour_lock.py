"""The colour lock on the restorer's output: it takes back colour and brightness the model must not change,
and keeps the structure that restoring a face moves, on a real face (scikit-image's astronaut, aligned by the
runtime's own detector)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedeblur.degradations import apply_kernel, camera_shake_kernel
from facedeblur.pipeline.align import estimate_alignment, warp_to_crop
from facedeblur.pipeline.detect import FaceDetector
from facedeblur.pipeline.restore import FaceRestorer, lock_colour


@pytest.fixture(scope="module")
def face_crop(astronaut_bgr) -> np.ndarray:
    face = FaceDetector().detect(astronaut_bgr)[0]
    return warp_to_crop(astronaut_bgr, estimate_alignment(face.landmarks, 128), 128)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = np.clip(image.astype(np.float64), 0, 255) - reference.astype(np.float64)
    return float(10 * np.log10(255.0 ** 2 / np.mean(error ** 2)))


def test_lock_takes_back_a_colour_cast_and_a_brightness_shift(face_crop):
    """A restoration that tinted the face and brightened it is brought back to the input's colour and level."""
    tinted = np.clip(face_crop.astype(np.float32) + np.array([-12.0, 8.0, 15.0], np.float32), 0, 255)
    assert psnr(tinted, face_crop) < 28
    locked = lock_colour(face_crop, tinted)
    assert psnr(locked, face_crop) > 42
    assert np.abs(locked.mean(axis=(0, 1)) - face_crop.mean(axis=(0, 1))).max() < 1.0


@pytest.mark.parametrize("seed", range(4))
def test_lock_keeps_a_shaken_face_where_the_restorer_put_it(face_crop, seed):
    """Camera shake moves a face's coarse structure (a shake path is rarely centred). A restorer that undid the
    shake perfectly must keep its result: a lock that put back the input's coarse brightness would re-blur it
    (to 30-37 dB against the clean face here)."""
    kernel = camera_shake_kernel(np.random.default_rng(seed), max_length=24, min_length=10)
    shaken = np.clip(np.rint(apply_kernel(face_crop.astype(np.float32), kernel)), 0, 255).astype(np.uint8)
    assert psnr(shaken, face_crop) < 22
    assert psnr(lock_colour(shaken, face_crop.astype(np.float32)), face_crop) > 42


def test_shipped_model_restores_no_worse_with_the_lock_on(face_crop):
    """Through the shipped ONNX model: on a shaken face the lock costs nothing measurable, and on a noisy face,
    where the model's guess at the exposure shifts the brightness, it helps."""
    rng = np.random.default_rng(3)
    shaken = np.clip(np.rint(apply_kernel(face_crop.astype(np.float32),
                                          camera_shake_kernel(rng, max_length=20, min_length=10))), 0, 255)
    noisy = np.clip(np.rint(face_crop + rng.normal(0, 8, face_crop.shape)), 0, 255)
    damaged = [shaken.astype(np.uint8), noisy.astype(np.uint8)]
    locked = FaceRestorer(provider="cpu", colour_lock=True).restore_batch(damaged)
    free = FaceRestorer(provider="cpu", colour_lock=False).restore_batch(damaged)
    assert psnr(locked[0], face_crop) > psnr(free[0], face_crop) - 0.1
    assert psnr(locked[1], face_crop) > psnr(free[1], face_crop)
    assert psnr(locked[0], face_crop) > psnr(shaken, face_crop) + 1.0
