"""`restorer.flip_average`: each face is restored as it is and mirrored, and the two restorations averaged."""
from __future__ import annotations

import numpy as np
import pytest

from facedeblur.config import PipelineSettings
from facedeblur.degradations import apply_kernel, camera_shake_kernel
from facedeblur.pipeline.align import estimate_alignment, warp_to_crop
from facedeblur.pipeline.detect import FaceDetector
from facedeblur.pipeline.restore import FaceRestorer


@pytest.fixture(scope="module")
def shaken_face(astronaut_bgr) -> np.ndarray:
    face = FaceDetector().detect(astronaut_bgr)[0]
    crop = warp_to_crop(astronaut_bgr, estimate_alignment(face.landmarks, 128), 128)
    kernel = camera_shake_kernel(np.random.default_rng(5), max_length=20, min_length=10)
    return np.clip(np.rint(apply_kernel(crop.astype(np.float32), kernel)), 0, 255).astype(np.uint8)


def test_a_mirrored_face_comes_back_as_the_mirror_of_its_restoration(shaken_face):
    """Through the shipped ONNX model: the network alone restores a face and its mirror image differently
    (its guesses are not symmetric); averaged over the mirror, the two restorations mirror each other."""
    mirrored = np.ascontiguousarray(shaken_face[:, ::-1])

    def mirror_mismatch(restorer: FaceRestorer) -> int:
        face, mirror = restorer.restore_batch([shaken_face, mirrored])
        return int(np.abs(face.astype(np.int16) - mirror[:, ::-1].astype(np.int16)).max())

    assert mirror_mismatch(FaceRestorer(provider="cpu")) > 4
    assert mirror_mismatch(FaceRestorer(provider="cpu", flip_average=True)) <= 1  # rounding only


def test_flip_average_is_an_opt_in_setting():
    assert PipelineSettings().restorer.flip_average is False
    assert PipelineSettings.model_validate({"restorer": {"flip_average": True}}).restorer.flip_average is True
