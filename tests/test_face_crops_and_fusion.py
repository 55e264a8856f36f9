"""Large faces keep their native detail; temporal fusion cleans a face without ghosting motion into it, and
`temporal_window: auto` fuses only the faces it helps.

Real images (scikit-image's astronaut; the real blurred video pairs of ../shared/data when present), the real
detector and the real shipped ONNX restorer.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.config import PipelineSettings
from facedeblur.pipeline.detect import FaceDetector
from facedeblur.pipeline.face_crops import (alignment_scale, cut_face, native_side,
                                            restore_any_size_crop, restore_crops, sharpness)
from facedeblur.pipeline.restore import FaceRestorer
from facedeblur.pipeline.restore_image import restore_faces_in_image
from facedeblur.footage.process import process_input
from facedeblur.degradations import degrade, scale_for_face
from facedeblur.pipeline.temporal_fusion import (AUTO_RESTORED_WINDOW, NOT_FUSED, REJECTION_SIGMAS, TemporalFuser,
                                                 automatic_plan, estimate_noise_sigma)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut(astronaut_bgr) -> np.ndarray:
    """A sharp portrait whose face (about 135 px wide) is twice the working crop's, like a webcam close-up."""
    return cv2.resize(astronaut_bgr, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def models(shipped_pipeline_models) -> tuple[FaceDetector, FaceRestorer]:
    return shipped_pipeline_models.detector, shipped_pipeline_models.restorer


def face_box(face) -> tuple[slice, slice]:
    x1, y1, x2, y2 = np.round(face.box).astype(int)
    return slice(max(0, y1), y2), slice(max(0, x1), x2)


@pytest.fixture(scope="module")
def unchanged_model(unchanged_model_path) -> FaceRestorer:
    return FaceRestorer(unchanged_model_path, threads=1)


def test_a_sharp_large_face_comes_back_at_least_as_sharp(astronaut, models, unchanged_model):
    detector, shipped = models
    face = detector.detect(astronaut)[0]
    assert face.width > 1.5 * shipped.crop_size / 2  # larger than the working crop's ~64 px face
    region = face_box(face)
    before = sharpness(astronaut[region])

    def after(restorer, mode):
        restored, faces = restore_faces_in_image(astronaut, detector, restorer, large_faces=mode)
        assert len(faces) == 1 and faces[0].restored_crop.shape == faces[0].original_crop.shape
        return sharpness(restored[region])

    # The pipeline itself: with a model that changes nothing, `correction` gives the face back exactly as
    # sharp; shrinking and enlarging (large_faces: resize) is what loses the detail. `adaptive` also judges
    # the native band by its own statistics, which take some of a sharp face's fine texture for noise: it
    # keeps most of the detail, far more than resizing.
    assert after(unchanged_model, "correction") >= 0.98 * before
    assert after(unchanged_model, "adaptive") >= 0.75 * before
    assert after(unchanged_model, "adaptive") > 1.4 * after(unchanged_model, "resize")
    assert after(unchanged_model, "native") >= 0.95 * before  # resampled twice (cut, paste), at native size
    assert after(unchanged_model, "resize") < 0.8 * before
    # With the shipped model, native-scale handling keeps far more of the face's detail than resizing.
    assert after(shipped, "native") > 1.5 * after(shipped, "resize")
    assert after(shipped, "native") >= 0.85 * before


def test_adaptive_drops_the_native_band_of_a_noisy_face_and_keeps_a_sharp_ones(astronaut, models):
    """A large face's detail finer than the working size is mostly noise on a noisy face: `adaptive` drops
    it (there `correction`, which keeps it, is far worse than shrinking), and keeps it on a sharp face."""
    detector, shipped = models
    face = detector.detect(astronaut)[0]
    region = face_box(face)
    noisy = np.clip(astronaut + np.random.default_rng(0).normal(0, 12, astronaut.shape), 0, 255).astype(np.uint8)

    def restored(image, mode):
        return restore_faces_in_image(image, detector, shipped, large_faces=mode)[0][region]

    clean_face = astronaut[region]
    assert psnr(clean_face, restored(noisy, "adaptive")) > psnr(clean_face, restored(noisy, "correction")) + 3.0
    assert psnr(clean_face, restored(noisy, "adaptive")) > psnr(clean_face, restored(noisy, "resize"))
    crop = cut_face(noisy, detector.detect(noisy)[0].landmarks, shipped.crop_size, shipped.info.template, "adaptive")
    noisy_weight = restore_crops(shipped, [crop])[0].native_detail
    crop = cut_face(astronaut, face.landmarks, shipped.crop_size, shipped.info.template, "adaptive")
    sharp_weight = restore_crops(shipped, [crop])[0].native_detail
    assert noisy_weight < 0.2 < 0.5 < sharp_weight
    assert sharpness(restored(astronaut, "adaptive")) > 1.3 * sharpness(restored(astronaut, "resize"))


def test_large_faces_are_cut_at_native_resolution(astronaut, models):
    detector, restorer = models
    face = detector.detect(astronaut)[0]
    size = restorer.crop_size
    crop = cut_face(astronaut, face.landmarks, size, restorer.info.template, "correction")
    expected = native_side(size, alignment_scale(crop.matrix) * size / crop.crop.shape[0])
    assert crop.crop.shape[0] == expected > size and crop.crop.shape[0] % 16 == 0
    assert crop.working.shape[:2] == (size, size) and crop.add_correction
    native = cut_face(astronaut, face.landmarks, size, restorer.info.template, "native")
    assert native.working.shape == native.crop.shape == crop.crop.shape
    small = cv2.resize(astronaut, (192, 192), interpolation=cv2.INTER_AREA)  # face far below the working size
    small_face = detector.detect(cv2.resize(small, (384, 384)))  # found at 2x, landmarks mapped back
    assert small_face
    tiny = cut_face(small, small_face[0].landmarks / 2, size, restorer.info.template, "correction")
    assert tiny.crop.shape[0] == size and not tiny.add_correction


def test_restore_aligned_large_crop_keeps_native_detail(astronaut, models, unchanged_model):
    _, shipped = models
    crop = astronaut[30:390, 180:540]  # 360 px, the face fills it
    restored = restore_any_size_crop(unchanged_model, crop, "correction")
    assert restored.shape == crop.shape
    assert sharpness(restored) >= 0.98 * sharpness(crop)
    assert sharpness(restore_any_size_crop(unchanged_model, crop, "resize")) < 0.8 * sharpness(crop)
    assert sharpness(restore_any_size_crop(shipped, crop, "correction")) > \
        sharpness(restore_any_size_crop(shipped, crop, "resize"))



def test_restore_aligned_adaptive_drops_native_noise_like_a_detected_face(astronaut, models):
    """`restore --aligned` follows the large-face rule of detected faces: `adaptive` replaces the native band
    where it measures as noise, so a noisy crop (not square here) comes out cleaner than with `correction`,
    which keeps the native pixels, noise included."""
    _, shipped = models
    clean = astronaut[30:390, 200:520]  # 360 x 320 px, the face fills it
    noise = np.random.default_rng(0).normal(0, 15, clean.shape)
    noisy = np.clip(clean + noise, 0, 255).astype(np.uint8)
    adaptive = restore_any_size_crop(shipped, noisy, "adaptive")
    correction = restore_any_size_crop(shipped, noisy, "correction")
    assert adaptive.shape == correction.shape == clean.shape
    assert psnr(adaptive, clean) > psnr(correction, clean) + 2.0

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def face_crop(astronaut, models) -> np.ndarray:
    detector, restorer = models
    face = detector.detect(astronaut)[0]
    return cut_face(astronaut, face.landmarks, 128, restorer.info.template, "resize").crop


def noisy(image: np.ndarray, seed: int, sigma: float = 12.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                          borderMode=cv2.BORDER_REFLECT101)


def test_noise_estimate_is_close_to_the_true_sigma(face_crop):
    grey = cv2.cvtColor(face_crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    noisy_grey = np.clip(grey + np.random.default_rng(0).normal(0, 10, grey.shape), 0, 255).astype(np.uint8)
    assert 7.0 < estimate_noise_sigma(noisy_grey) < 13.0


def test_fusing_shifted_noisy_neighbours_cleans_the_face(face_crop):
    reference = noisy(face_crop, 0)
    # Neighbours as a track gives them: aligned by landmarks up to a pixel or two, independent noise.
    offsets = [(1.5, -1.0), (-1.0, 0.5), (0.5, 1.5), (-1.5, -1.5)]
    neighbours = [noisy(shifted(face_crop, dx, dy), seed + 1) for seed, (dx, dy) in enumerate(offsets)]
    fused = TemporalFuser().fuse(reference, neighbours)
    assert fused.shape == reference.shape and fused.dtype == np.uint8
    inner = (slice(16, 112), slice(16, 112))  # away from borders that flow cannot align
    assert psnr(face_crop[inner], fused[inner]) > psnr(face_crop[inner], reference[inner]) + 2.0
    # Plain averaging of the unaligned neighbours blurs the face: fusion must beat it.
    average = np.mean([reference, *neighbours], axis=0)
    assert psnr(face_crop[inner], fused[inner]) > psnr(face_crop[inner], average[inner])


def test_what_moved_in_a_neighbour_is_rejected_not_ghosted(face_crop):
    reference = noisy(face_crop, 0, sigma=4.0)
    occluded = noisy(face_crop, 1, sigma=4.0)
    occluded[40:80, 40:80] = 0  # a hand in front of the face in one neighbour only
    fused = TemporalFuser().fuse(reference, [occluded, noisy(face_crop, 2, sigma=4.0)])
    # A plain 3-frame mean would darken the square by a third (about 40 grey levels here).
    difference = np.abs(fused[45:75, 45:75].astype(np.float32) - face_crop[45:75, 45:75].astype(np.float32)).mean()
    assert difference < 8.0, difference
    assert np.array_equal(TemporalFuser().fuse(reference, []), reference)


def test_a_noisy_face_keeps_out_what_changed_in_a_neighbour(face_crop):
    """Under severe noise a neighbour's small content change (30 grey levels over a patch: a mouth opening, a
    moving face's shading) is within the lenient default tolerance of the noise; `auto`'s plan for a noisy
    face judges neighbours more strictly, so less of the change is merged in, and the face is still cleaned."""
    reference = noisy(face_crop, 0, sigma=20.0)
    changed = face_crop.astype(np.float32)
    changed[40:80, 40:80] += 30.0
    neighbours = [noisy(np.clip(changed, 0, 255), 1, sigma=20.0), noisy(face_crop, 2, sigma=20.0),
                  noisy(face_crop, 3, sigma=20.0)]
    plan = automatic_plan(reference)
    assert plan.window > 0 and plan.rejection_sigmas < REJECTION_SIGMAS, plan
    strict = TemporalFuser().fuse(reference, neighbours, None, plan.min_noise_sigma, plan.rejection_sigmas)
    lenient = TemporalFuser().fuse(reference, neighbours, None, plan.min_noise_sigma)

    def brightened(fused: np.ndarray) -> float:
        return float(fused[45:75, 45:75].astype(np.float32).mean() - face_crop[45:75, 45:75].astype(np.float32).mean())

    assert abs(brightened(strict)) < 0.5 * brightened(lenient), (brightened(strict), brightened(lenient))
    inner = (slice(16, 112), slice(16, 112))
    assert psnr(face_crop[inner], strict[inner]) > psnr(face_crop[inner], reference[inner]) + 2.0


def test_temporal_window_is_a_validated_setting():
    settings = PipelineSettings.model_validate({"restorer": {"temporal_window": 3, "large_faces": "native"}})
    assert settings.restorer.temporal_window == 3 and settings.restorer.large_faces == "native"
    assert PipelineSettings().restorer.temporal_window == "auto"
    assert PipelineSettings.model_validate({"restorer": {"temporal_window": "auto"}}).restorer.temporal_window == "auto"
    for bad in (-1, 9, "fast", True):
        with pytest.raises(Exception, match="must be auto or a whole number of frames from 0 \\(off\\) to 8"):
            PipelineSettings.model_validate({"restorer": {"temporal_window": bad}})
    with pytest.raises(Exception):
        PipelineSettings.model_validate({"restorer": {"large_faces": "bigger"}})


def test_a_clean_photo_gives_its_largest_face_aligned_unless_it_is_too_small(astronaut_bgr):
    """The rule training and evaluation share (pipeline/align.align_largest_face): the largest face, refused
    when its eyes are too close for the crop (enlarging it would make a soft reference)."""
    from facedeblur.pipeline.align import FACE_TOO_SMALL, NO_FACE, align_largest_face, largest_face

    detector = FaceDetector(pyramid=(1.0,), find_mosaics=False)
    small = cv2.resize(astronaut_bgr, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    both = np.zeros((512, 768, 3), np.uint8)
    both[:, :512] = astronaut_bgr
    both[:256, 512:] = small
    faces = detector.detect(both)
    assert len(faces) == 2
    assert largest_face(faces).box[2] <= 512          # the full-size face, not the smaller one beside it
    crop, reason = align_largest_face(both, faces, 128)
    assert reason == "ok" and crop.shape == (128, 128, 3)
    alone = detector.detect(astronaut_bgr)[0]
    assert np.abs(largest_face(faces).box - alone.box).max() < 6   # the same face as in the photo alone

    # Half size: its eyes are closer than 0.8 x the 128 px template's, so it is refused; at 64 px it is fine.
    assert align_largest_face(small, detector.detect(small), 128) == (None, FACE_TOO_SMALL)
    assert align_largest_face(small, detector.detect(small), 64)[1] == "ok"
    assert align_largest_face(both, [], 128) == (None, NO_FACE)


BLUR_PAIRS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "video-blur-pairs.tar"


@pytest.fixture(scope="module")
def blur_pairs() -> dict[str, list[np.ndarray]]:
    """The first 6 consecutive frames of the real blurred video pairs: a speaker whose face moves about 11 % of
    its eye distance per frame, camera-blurred but with little noise ("blurry"), and the sharp frames."""
    if not BLUR_PAIRS.exists():
        pytest.skip(f"{BLUR_PAIRS} not present (shared data)")
    frames: dict[str, list[np.ndarray]] = {"blurry": [], "sharp": []}
    with tarfile.open(BLUR_PAIRS) as tar:
        members = sorted((m for m in tar if m.isfile() and m.name.endswith(".png")), key=lambda m: m.name)
        for kind in frames:
            for member in [m for m in members if f"/{kind}/" in m.name][:6]:
                data = np.frombuffer(tar.extractfile(member).read(), np.uint8)
                frames[kind].append(cv2.imdecode(data, cv2.IMREAD_COLOR))
    return frames


def with_sensor_noise(frame: np.ndarray, seed: int) -> np.ndarray:
    """The frame with Gaussian noise of sigma 20, the severe tier of the trainer's noise damage."""
    return noisy(frame, seed, sigma=20.0)


def with_cctv_damage(frame: np.ndarray, seed: int) -> np.ndarray:
    """The frame through the trainer's severe CCTV chain (blur, resolution loss, noise, codec blocks), scaled
    to this clip's face as the video benchmark does, a fresh draw per frame."""
    return degrade(frame, "cctv", np.random.default_rng([seed]), "severe", scale=scale_for_face(130.0)).image


def test_auto_fusion_plans_by_the_damage_a_real_face_shows(blur_pairs, models):
    detector, restorer = models
    sharp, blurry = blur_pairs["sharp"][0], blur_pairs["blurry"][0]
    landmarks = detector.detect(sharp)[0].landmarks

    def plan(frame):
        return automatic_plan(cut_face(frame, landmarks, restorer.crop_size, restorer.info.template).working)

    # Clean and camera-blurred faces are left alone. Under sensor noise the face is merged with its
    # neighbours before restoring (the noise averages away); smeared by a CCTV chain, whose neighbours are
    # each blurred their own way, after restoring, when every frame was restored alone.
    assert plan(sharp) == NOT_FUSED and plan(blurry) == NOT_FUSED
    noisy_plans = [plan(with_sensor_noise(sharp, 0)), plan(with_sensor_noise(blurry, 0))]
    assert all(p.window > 0 and p.after_window == 0 for p in noisy_plans), noisy_plans
    smeared = plan(with_cctv_damage(sharp, 0))
    assert smeared.window == 0 and smeared.after_window == AUTO_RESTORED_WINDOW, smeared
    # restored faces differ where the network guessed, so agreement is judged more leniently after restoring
    assert smeared.after_min_noise_sigma > noisy_plans[0].min_noise_sigma


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["none", "noise", "moving noise", "cctv"])
def test_auto_fuses_a_noisy_or_smeared_face_and_leaves_a_clean_one_alone(blur_pairs, shipped_pipeline_models,
                                                                          damage, tmp_path):
    """Through the whole pipeline at default settings (`temporal_window: auto`): the real blurred pairs as
    they are (fusion would cost detail there: docs/BENCHMARKS.md); a still face under sensor noise (one frame,
    a fresh noise draw each time), merged before restoring; the same moving speaker under sensor noise, whose
    neighbours moved too much to be merged; and the moving speaker through a severe CCTV chain, merged after
    restoring."""
    damaged = {"none": lambda frame, seed: frame, "noise": with_sensor_noise, "moving noise": with_sensor_noise,
               "cctv": with_cctv_damage}[damage]
    folder = tmp_path / "frames"
    folder.mkdir()
    source = {"none": blur_pairs["blurry"], "noise": [blur_pairs["blurry"][0]] * len(blur_pairs["blurry"]),
              "moving noise": blur_pairs["blurry"], "cctv": blur_pairs["sharp"]}[damage]
    for index, frame in enumerate(source):
        cv2.imwrite(str(folder / f"{index:05d}.png"), damaged(frame, index))
    settings = PipelineSettings()
    settings.output.write_annotated = False
    manifest = process_input(folder, tmp_path / "out", settings, shipped_pipeline_models, progress=False)
    entries = [entry for track in manifest["tracks"] for entry in track["frames"]]
    assert len(entries) == len(source)
    before = [entry["frames_merged"] for entry in entries]
    after = [entry["frames_merged_after_restoring"] for entry in entries]
    if damage in ("none", "moving noise"):
        # the moving face's noisy neighbours disagree with it over much of the face: merging them would ghost
        assert not any(before) and not any(after), (before, after)
        return
    # Each severe noise draw is noisy; a CCTV draw can come out mild enough to be left alone, and this face
    # moves about 11 % of its eye distance per frame, so a smeared face's neighbours may all be rejected.
    if damage == "noise":
        assert all(before) and not any(after), (before, after)
    else:
        assert not any(before) and sum(map(bool, after)) >= len(after) / 2, (before, after)
    reach = {"frames_merged": 3, "frames_merged_after_restoring": AUTO_RESTORED_WINDOW}
    assert all(entry["frame"] not in entry[key] and all(abs(other - entry["frame"]) <= reach[key] for other in entry[key])
               for entry in entries for key in reach), entries


@pytest.mark.slow
def test_merging_restored_faces_brings_a_smeared_moving_face_closer_to_the_truth(blur_pairs, shipped_pipeline_models,
                                                                                tmp_path):
    """Sharp frames of a moving speaker through a severe CCTV chain, a fresh draw per frame: with `auto` (each
    frame restored alone, then the restored faces merged) the frames come out closer to the sharp ones than
    with fusion off. Only the faces differ between the two runs, so whole-frame error compares the faces."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(blur_pairs["sharp"]):
        cv2.imwrite(str(folder / f"{index:05d}.png"), with_cctv_damage(frame, index))
    errors = {}
    for window in ("auto", 0):
        settings = PipelineSettings.model_validate({"restorer": {"temporal_window": window},
                                                    "output": {"write_annotated": False}})
        out = tmp_path / f"out-{window}"
        process_input(folder, out, settings, shipped_pipeline_models, progress=False)
        restored = [cv2.imread(str(out / "restored" / f"{index:05d}.png")) for index in range(len(blur_pairs["sharp"]))]
        errors[window] = float(np.mean([np.mean((r.astype(np.float64) - s) ** 2)
                                        for r, s in zip(restored, blur_pairs["sharp"])]))
    assert errors["auto"] < errors[0], errors


def test_restore_aligned_keeps_a_non_square_crop_at_its_own_pixels(astronaut_bgr, models, unchanged_model):
    """`restore --aligned` on a crop whose longer side is the working size: the short side is filled by
    mirroring, the face is not squashed into a square, so a model that changes nothing gives the crop back
    bit for bit (squashing and unsquashing alone moves pixels by up to 37 levels here), and the shipped model
    deblurs a horizontally shaken narrow crop."""
    _, shipped = models
    size = shipped.crop_size
    crop = astronaut_bgr[40:40 + size, 185:275].copy()
    assert crop.shape[0] == size > crop.shape[1]
    assert np.array_equal(restore_any_size_crop(unchanged_model, crop, "correction"), crop)

    shake = np.zeros((9, 9), np.float32)
    shake[4, :] = 1 / 9
    shaken = np.clip(cv2.filter2D(crop.astype(np.float32), -1, shake, borderType=cv2.BORDER_REFLECT), 0, 255)
    shaken = shaken.round().astype(np.uint8)
    restored = restore_any_size_crop(shipped, shaken, "correction")
    assert restored.shape == crop.shape
    error = lambda image: np.mean((image.astype(float) - crop.astype(float)) ** 2)
    assert error(restored) < error(shaken)
