"""The trainer end to end on tiny real data: prepare -> train (single and 2-process DDP on gloo) ->
resume -> export -> the exported model restores through onnxruntime at run time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facedeblur.degradations import CATEGORIES, degrade, training_degradation  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer  # noqa: E402
from facedeblur.trainer.arch import build_model  # noqa: E402
from facedeblur.trainer.dataset import load_split, prepare_dataset  # noqa: E402
from facedeblur.trainer.export import export_onnx, parity_check  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory) -> tuple[Path, Path]:
    """Real photos with one face each: scikit-image's astronaut, shifted, scaled and mirrored."""
    from skimage import data
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    train, val = tmp_path_factory.mktemp("photos"), tmp_path_factory.mktemp("photos-val")
    rng = np.random.default_rng(0)
    for i in range(8):
        scale = rng.uniform(0.6, 1.0)
        shift = rng.integers(-30, 30, size=2)
        matrix = np.float32([[scale, 0, shift[0]], [0, scale, shift[1]]])
        image = cv2.warpAffine(astronaut, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT101)
        if i % 2:
            image = image[:, ::-1]
        cv2.imwrite(str((val if i >= 6 else train) / f"astronaut-{i}.jpg"), image)
    (train / "not-an-image.jpg").write_bytes(b"this is text, not a JPEG")
    cv2.imwrite(str(train / "no-face.png"), np.full((200, 200, 3), 90, np.uint8))
    cv2.imwrite(str(train / "duplicate.jpg"), cv2.imread(str(train / "astronaut-0.jpg")))
    return train, val


@pytest.fixture(scope="module")
def cache(photo_folders, tmp_path_factory) -> Path:
    train, val = photo_folders
    output = tmp_path_factory.mktemp("cache")
    # a source named '*val*' goes to the validation split
    val_source = tmp_path_factory.mktemp("faces-val")  # unique: other test modules reuse this fixture
    val_source.rmdir()
    val.rename(val_source)
    summary = prepare_dataset([train, val_source], output, crop_size=64, workers=1)
    assert summary["counts"] == {"train": 6, "val": 2}
    assert summary["dropped"] == {"unreadable": 1, "no face": 1, "duplicate": 1}
    return output


@pytest.mark.slow
def test_prepared_crops_are_aligned_faces(cache):
    crops, index = load_split(cache, "train")
    assert crops.shape == (6, 64, 64, 3) and crops.dtype == np.uint8
    assert all(entry["name"].startswith("astronaut") for entry in index)
    from facedeblur.pipeline.detect import FaceDetector
    detector = FaceDetector()
    # the aligned crop must itself contain a centred face
    found = detector.detect(cv2.resize(crops[0], (256, 256), interpolation=cv2.INTER_CUBIC))
    assert found
    centre = (found[0].box[:2] + found[0].box[2:]) / 2
    assert np.all(np.abs(centre - 128) < 40)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_training_pairs_misalign_the_share_of_faces_asked_for(cache, share):
    """`--misalign`: that share of the training targets is the face cut a little off its alignment (and the
    damaged input is made from that same cut); the rest are the prepared crop itself or its mirror image."""
    from facedeblur.trainer.train import DegradedFaces

    crops, _ = load_split(cache, "train")
    exact = [crop for crop in crops] + [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
    pairs = DegradedFaces(crops, crops.shape[1], seed=5, misaligned=share)
    draws = 80
    moved = 0
    for i in range(draws):
        target = pairs[i][1].numpy().transpose(1, 2, 0)[:, :, ::-1]
        if not any(np.array_equal(target, crop) for crop in exact):
            moved += 1
    assert abs(moved / draws - share) < 0.15, moved


def test_degradations_are_reproducible_and_damage_the_image():
    sample_photo = REPO / "src/facedeblur/sample/sample-photo.png"
    photo = cv2.imread(str(sample_photo))
    assert photo is not None, f"{sample_photo} is missing or unreadable: the package ships it (scripts/make_sample.py)"
    clean = cv2.resize(photo, (128, 128))
    for category in CATEGORIES:
        first = degrade(clean, category, np.random.default_rng(7))
        second = degrade(clean, category, np.random.default_rng(7))
        assert np.array_equal(first.image, second.image), category
        assert first.image.shape == clean.shape and first.image.dtype == np.uint8
        assert np.abs(first.image.astype(int) - clean).mean() > 0.5, f"{category} changed nothing"
        if category in ("motion_blur", "defocus", "gaussian_blur"):
            assert first.kernel is not None and abs(first.kernel.sum() - 1) < 1e-4
    mixtures = {tuple(training_degradation(clean, np.random.default_rng(s)).steps) for s in range(30)}
    assert len(mixtures) > 10


@pytest.mark.slow
def test_train_resume_export_and_run_through_onnxruntime(cache, tmp_path):
    run = tmp_path / "run"
    base = [PYTHON, "-m", "facedeblur", "train", "run", "--data", str(cache), "--out", str(run), "--width", "8",
            "--batch", "2", "--patch", "32", "--val-every", "3", "--val-count", "2", "--workers", "0"]
    subprocess.run(base + ["--steps", "3"], check=True, cwd=REPO, timeout=300)
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
    subprocess.run(base + ["--steps", "6", "--resume"], check=True, cwd=REPO, timeout=300)
    history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [3, 6]
    assert cv2.imread(str(run / "val-0000006.png")) is not None
    assert (run / "command.txt").read_text().startswith("facedeblur train run")

    onnx_path = tmp_path / "model.onnx"
    result = subprocess.run([PYTHON, "-m", "facedeblur", "train", "export", str(run / "last.pt"), "-o", str(onnx_path)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "parity" in result.stdout
    restorer = FaceRestorer(onnx_path, provider="cpu")
    assert restorer.crop_size == 64 and restorer.info.name == "facedeblur-default"
    crops, _ = load_split(cache, "val")
    out = restorer.restore_batch(list(crops))
    assert len(out) == 2 and out[0].shape == (64, 64, 3)


@pytest.mark.slow
def test_a_model_grown_with_init_records_the_training_its_weights_inherited(cache, tmp_path):
    """A deeper network started from a trained run keeps that run's steps, hours and samples as `inherited`
    (through a resume too), and the exported model records them with the totals over both."""
    base = [PYTHON, "-m", "facedeblur", "train", "run", "--data", str(cache), "--width", "8", "--batch", "2",
            "--patch", "32", "--val-every", "3", "--val-count", "2", "--workers", "0"]
    subprocess.run(base + ["--out", str(tmp_path / "source"), "--steps", "3"], check=True, cwd=REPO, timeout=300)
    source = torch.load(tmp_path / "source" / "last.pt", weights_only=False)["training_summary"]
    grown = tmp_path / "grown"
    grow = base + ["--out", str(grown), "--middle-blocks", "5", "--init", str(tmp_path / "source" / "last.pt")]
    subprocess.run(grow + ["--steps", "3"], check=True, cwd=REPO, timeout=300)
    subprocess.run(grow + ["--steps", "6", "--resume"], check=True, cwd=REPO, timeout=300)
    record = torch.load(grown / "last.pt", weights_only=False)["training_summary"]
    inherited = record["inherited"]
    assert inherited["steps"] == 3 and inherited["samples"] == source["samples"] == 6
    assert inherited["hours"] == source["hours"] and inherited["source"] == "source/last.pt"
    assert inherited["model_config"]["middle_blocks"] == 4
    assert record["steps"] == 6 and record["samples"] == 12 and record["total_samples"] == 18
    onnx_path = tmp_path / "grown.onnx"
    subprocess.run([PYTHON, "-m", "facedeblur", "train", "export", str(grown / "last.pt"), "-o", str(onnx_path)],
                   check=True, cwd=REPO, timeout=300, capture_output=True)
    training = json.loads(FaceRestorer(onnx_path, provider="cpu").info.extra["training"])
    assert training["inherited"]["samples"] == 6 and training["total_samples"] == 18


def test_export_parity_on_a_model_with_random_weights(tmp_path):
    torch.manual_seed(0)
    model = build_model(dict(width=8, levels=2))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)  # the tail starts at zero; make it do something
    path = tmp_path / "random.onnx"
    difference = export_onnx(model, path, {"name": "t", "version": "0"}, crop_size=64)
    assert difference < 1e-3
    assert parity_check(model, path, 64) == difference
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        assert (model(x) - x).abs().max() > 1e-3  # the check compared a model that really transforms


@pytest.mark.slow
def test_distributed_training_with_two_cpu_processes(cache, tmp_path):
    """torchrun with 2 processes on gloo: both ranks train in lockstep and rank 0 saves."""
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "facedeblur.trainer.train", "--data", str(cache), "--out", str(run), "--width", "8", "--batch", "2",
         "--patch", "32", "--steps", "4", "--val-every", "4", "--val-count", "2", "--workers", "0", "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(run / "last.pt", weights_only=False)
    assert checkpoint["step"] == 4 and checkpoint["training_summary"]["processes"] == 2


@pytest.mark.slow
def test_show_degradations_writes_a_grid(cache, tmp_path):
    output = tmp_path / "grid.png"
    subprocess.run([PYTHON, "-m", "facedeblur", "train", "show-degradations", str(cache), "-o", str(output),
                    "--rows", "2", "--crop-size", "64"], check=True, cwd=REPO, timeout=120)
    grid = cv2.imread(str(output))
    assert grid.shape[1] == 64 * (len(CATEGORIES) + 1)
    assert grid.shape[0] > 64 * 2


def test_init_from_an_exported_model_starts_exactly_where_it_was(tmp_path):
    """Fine-tuning starts from a shipped .onnx: same outputs, and added blocks start as the identity."""
    from facedeblur.trainer.train import initialise_from
    torch.manual_seed(0)
    source = build_model(dict(width=8, levels=2, middle_blocks=1, unshuffle=2))
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)  # a non-trivial model (its tail is not zero)
    onnx_path = tmp_path / "source.onnx"
    export_onnx(source, onnx_path, {"name": "init-test", "version": "test"}, crop_size=64)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
    same = build_model(dict(width=8, levels=2, middle_blocks=1, unshuffle=2))
    assert initialise_from(same, onnx_path) == (len(same.state_dict()), 0)
    deeper = build_model(dict(width=8, levels=2, middle_blocks=3, unshuffle=2))
    copied, added = initialise_from(deeper, onnx_path)
    assert copied == len(same.state_dict()) and added == 8  # two new blocks x (conv1, conv2) x (weight, bias)
    with torch.no_grad():
        assert torch.allclose(same(x), expected, atol=1e-5)
        assert torch.allclose(deeper(x), expected, atol=1e-5)
    with pytest.raises(Exception, match="no weights match"):
        initialise_from(build_model(dict(width=12, levels=2, unshuffle=1)), onnx_path)


def test_training_clock_leaves_out_a_stopped_stretch():
    """A trainer stopped (SIGSTOP) for longer than any step could take has not trained then: the campaign's
    hours and its schedule must not count it, while ordinary steps are all counted."""
    import time

    from facedeblur.trainer.train import TrainingClock

    clock = TrainingClock(pause_seconds=0.5)
    time.sleep(0.1)
    first = clock.tick()
    time.sleep(0.8)  # stands for a stop: longer than pause_seconds
    second = clock.tick()
    time.sleep(0.1)
    third = clock.tick()
    assert 0.09 / 60 <= first < 0.5 / 60
    assert second == first
    assert clock.paused_seconds >= 0.8
    assert third > second and third < 0.5 / 60
