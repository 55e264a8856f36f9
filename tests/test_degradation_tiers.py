"""The severity tiers of the synthetic damage, measured on real faces (scikit-image's astronaut and, where the
shared data is present, faces of other people from All-Age-Faces)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.degradations import (CATEGORIES, SEVERITIES, TRAINING_SEVERITY_WEIGHTS,
                                     TRAINING_SINGLE_SHARES, camera_shake_kernel, cctv_chain, defocus_kernel,
                                     degrade, misalign, random_severity, random_single_category,
                                     training_degradation)
from facedeblur.pipeline.align import estimate_alignment, warp_to_crop
from facedeblur.pipeline.detect import FaceDetector

skimage_data = pytest.importorskip("skimage.data")
AAF_VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aaf-val.tar"


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    image = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    face = FaceDetector().detect(image)[0]
    return warp_to_crop(image, estimate_alignment(face.landmarks, 128), 128)


@pytest.fixture(scope="module")
def aaf_faces() -> dict[str, np.ndarray]:
    """Six eye-aligned real faces of different people (the shared All-Age-Faces validation set) at 128 px."""
    if not AAF_VAL.exists():
        pytest.skip(f"{AAF_VAL} not present (shared evaluation data)")
    faces = {}
    with tarfile.open(AAF_VAL) as tar:
        for member in [m for m in tar.getmembers() if m.isfile()][:60:10]:
            encoded = np.frombuffer(tar.extractfile(member).read(), np.uint8)
            faces[member.name] = cv2.resize(cv2.imdecode(encoded, cv2.IMREAD_COLOR), (128, 128),
                                            interpolation=cv2.INTER_AREA)
    return faces


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def mean_psnr(clean: np.ndarray, category: str, severity: str, draws: int = 6) -> float:
    return float(np.mean([psnr(degrade(clean, category, np.random.default_rng(seed), severity).image, clean)
                          for seed in range(draws)]))


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_tier_is_harder_than_the_one_before(face_crop, category):
    mild, moderate, severe = (mean_psnr(face_crop, category, s) for s in SEVERITIES)
    assert mild > moderate > severe, (category, mild, moderate, severe)


def test_severe_motion_blur_is_as_hard_as_real_camera_shake(face_crop):
    # Real camera shake on a face about 64 px wide leaves about 21-22 dB: the severe tier must reach it, or the
    # model never trains on the blur that CCTV footage shows.
    assert mean_psnr(face_crop, "motion_blur", "severe", draws=12) < 25.0


def test_each_tier_is_harder_than_the_one_before_on_every_face_of_other_people(aaf_faces):
    """The tiers hold per face, not only on average over the astronaut: on every real face (other people, ages
    and lighting) each category's severe damage is clearly worse than its mild damage."""
    for category in CATEGORIES:
        for name, face in aaf_faces.items():
            mild, moderate, severe = (mean_psnr(face, category, s, draws=4) for s in SEVERITIES)
            assert mild > moderate > severe, (category, name, mild, moderate, severe)
            assert mild - severe > 2.0, (category, name, mild, severe)


def test_camera_shake_path_spans_up_to_its_length_and_keeps_the_image_centred():
    rng = np.random.default_rng(0)
    for _ in range(20):
        kernel = camera_shake_kernel(rng, max_length=25.0, min_length=15.0)
        ys, xs = np.nonzero(kernel > 1e-4)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min())
        assert 6 <= extent <= 26  # a curling path is shorter than its length, never longer
        assert kernel.shape[0] % 2 == 1 and kernel.sum() == pytest.approx(1.0, abs=1e-4)
        centre = kernel.shape[0] // 2
        cy, cx = (np.indices(kernel.shape) * kernel).sum(axis=(1, 2))
        assert abs(cy - centre) < 6 and abs(cx - centre) < 6
    assert defocus_kernel(5.0).shape[0] >= 11


def test_cctv_chain_runs_its_steps_in_camera_order(face_crop):
    damaged = cctv_chain(face_crop, np.random.default_rng(3), "severe")
    assert damaged.image.shape == face_crop.shape and damaged.image.dtype == np.uint8
    assert damaged.steps[0] == "camera shake" and damaged.steps[1].startswith("downscale")
    assert damaged.steps[2].startswith("noise") and damaged.steps[-1] == "upscale"
    assert damaged.steps[3].startswith(("jpeg", "codec"))


def test_whole_photo_damage_scales_with_the_face_not_the_image(face_crop):
    photo = cv2.resize(face_crop, (512, 512), interpolation=cv2.INTER_CUBIC)  # face ~256 px wide
    # The same draw with the face's scale (256 / 64 = 4) blurs four times wider than with the crop's scale.
    by_face = degrade(photo, "defocus", np.random.default_rng(1), "severe", scale=4.0)
    by_image = degrade(photo, "defocus", np.random.default_rng(1), "severe", scale=1.0)
    assert by_face.kernel.shape[0] > 3 * by_image.kernel.shape[0] - 6
    assert psnr(by_face.image, photo) < psnr(by_image.image, photo)


def test_training_draws_every_tier_in_its_proportions(face_crop):
    rng = np.random.default_rng(5)
    draws = [random_severity(rng) for _ in range(4000)]
    for severity, weight in TRAINING_SEVERITY_WEIGHTS.items():
        assert draws.count(severity) / len(draws) == pytest.approx(weight, abs=0.03)
    small = cv2.resize(face_crop, (64, 64), interpolation=cv2.INTER_AREA)
    steps = {tuple(training_degradation(small, np.random.default_rng(s)).steps) for s in range(40)}
    assert any(s[0] == "camera shake" for s in steps)  # CCTV chains are part of the mix


def test_training_draws_single_categories_by_their_shares():
    """Every single category is trained (the chains and the mixture are drawn apart), camera shake with
    three shares."""
    assert set(TRAINING_SINGLE_SHARES) == set(CATEGORIES) - {"mixed", "cctv"}
    rng = np.random.default_rng(2)
    draws = [random_single_category(rng) for _ in range(6000)]
    total = sum(TRAINING_SINGLE_SHARES.values())
    for category, share in TRAINING_SINGLE_SHARES.items():
        assert draws.count(category) / len(draws) == pytest.approx(share / total, abs=0.02), category
    assert draws.count("motion_blur") > 2.5 * draws.count("defocus")


def test_unknown_severity_is_refused(face_crop):
    with pytest.raises(ValueError, match="unknown severity 'extreme'"):
        degrade(face_crop, "noise", np.random.default_rng(0), "extreme")


@pytest.mark.parametrize("category", ["codec_blocks", "jpeg"])
def test_compression_blocks_fall_on_a_randomly_offset_grid(face_crop, category):
    """In footage the codec's block grid lies wherever the face happens to be, so the damage must not put
    block edges at the same crop pixels every time (a model trained that way learns to look for them there)."""
    phases = set()
    for seed in range(8):
        damaged = degrade(face_crop, category, np.random.default_rng(seed), "severe").image.astype(np.float32)
        steps = np.abs(np.diff(damaged.mean(axis=2), axis=1)).mean(axis=0)  # between column x and x + 1
        period = 16 if category == "codec_blocks" else 8
        phases.add(int(np.argmax([steps[phase::period].mean() for phase in range(period)])))
    assert len(phases) >= 3, phases


def test_mosaic_cells_lie_where_a_frame_puts_them_in_the_crop(face_crop):
    """A mosaic is drawn on the frame, so in an aligned crop its cells start at any phase and are often turned
    (the crop is cut by a similarity); cells always at the crop's corner flattered 0.6.0 by 0.3 to 0.8 dB.
    Straight cells show their edges at one column phase only; turned ones spread them over every phase."""
    straight_phases, turned = set(), 0
    for seed in range(12):
        damaged = degrade(face_crop, "pixelate", np.random.default_rng(seed), "moderate")
        block = int(damaged.steps[0].split()[1].removesuffix("px"))
        columns = np.abs(np.diff(damaged.image.astype(np.float32).mean(axis=2), axis=1)).mean(axis=0)
        by_phase = np.array([columns[phase::block].mean() for phase in range(block)])
        if np.sort(by_phase)[-2] < 1e-3 * by_phase.max():
            straight_phases.add(int(np.argmax(by_phase)))
        else:
            turned += 1
            assert by_phase.max() < 2 * np.median(by_phase), by_phase
    assert len(straight_phases) >= 3 and turned >= 3, (straight_phases, turned)


def test_misalign_moves_the_landmarks_as_a_damaged_face_s_detection_would_and_keeps_the_detail(face_crop):
    """`misalign` cuts the face off its alignment by about the landmark error of faces found on damaged
    footage (a few pixels, not none and not a different crop), reproducibly, and without the softening of a
    bilinear warp (it is also a training target)."""
    detector = FaceDetector()
    reference = detector.detect(face_crop)[0].landmarks
    errors, detail = [], []
    for seed in range(12):
        moved = misalign(face_crop, np.random.default_rng(seed))
        assert moved.shape == face_crop.shape and moved.dtype == np.uint8
        errors.append(float(np.linalg.norm(detector.detect(moved)[0].landmarks - reference, axis=1).mean()))
        detail.append(cv2.Laplacian(cv2.cvtColor(moved, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())
    assert 1.0 < float(np.mean(errors)) < 6.0, errors
    assert max(errors) < 12.0, errors
    sharpness = cv2.Laplacian(cv2.cvtColor(face_crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert float(np.mean(detail)) > 0.8 * sharpness
    again = misalign(face_crop, np.random.default_rng(3))
    assert np.array_equal(again, misalign(face_crop, np.random.default_rng(3)))
