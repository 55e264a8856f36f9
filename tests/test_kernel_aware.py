"""The kernel-aware restorer on real faces: the in-graph deconvolution, the model started from a plain U-Net
and the shipped model resumed from its own ONNX, their ONNX export through onnxruntime, training with the
kernel estimator and the oracle comparison, and the SFace identity loss against the SFace the pipeline runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

torch = pytest.importorskip("torch")

from facedeblur.degradations import apply_kernel, camera_shake_kernel, defocus_kernel, degrade  # noqa: E402
from facedeblur.evaluation.metrics import psnr  # noqa: E402
from facedeblur.pipeline.align import FACE_TEMPLATE, estimate_alignment, warp_to_crop  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer, default_model_path  # noqa: E402
from facedeblur.trainer.arch import KernelAwareRestorer, build_model  # noqa: E402
from facedeblur.trainer.deconvolution import regularised_deconvolution  # noqa: E402
from facedeblur.trainer.export import export_onnx  # noqa: E402
from facedeblur.trainer.options import MODEL_SIZES  # noqa: E402
from facedeblur.trainer.train import fit_kernel, initialise_from  # noqa: E402
from test_trainer import cache, photo_folders  # noqa: E402,F401  (module fixtures: tiny real face crops)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def face_crop(astronaut_bgr, shipped_pipeline_models) -> np.ndarray:
    detector = shipped_pipeline_models.detector
    face = max(detector.detect(astronaut_bgr), key=lambda f: f.width * f.height)
    return warp_to_crop(astronaut_bgr, estimate_alignment(face.landmarks, 128), 128)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy())[None] / 255


def to_image(tensor: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(tensor[0].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kernel", [defocus_kernel(3.0), camera_shake_kernel(np.random.default_rng(3), 12, 8)],
                         ids=["defocus", "camera-shake"])
def test_deconvolution_with_the_true_kernel_sharpens_a_real_face(face_crop, kernel):
    blurred = np.clip(np.rint(apply_kernel(face_crop, kernel)), 0, 255).astype(np.uint8)
    true_kernel = torch.from_numpy(fit_kernel(kernel, 33))[None]
    restored = to_image(regularised_deconvolution(to_tensor(blurred), true_kernel, torch.tensor([2e-3])))
    assert psnr(face_crop, restored) > psnr(face_crop, blurred) + 2.0
    # a wrong kernel (a delta) gives back the blurred face, not a sharper one
    delta = torch.from_numpy(fit_kernel(np.ones((1, 1), np.float32), 33))[None]
    unchanged = to_image(regularised_deconvolution(to_tensor(blurred), delta, torch.tensor([1e-5])))
    assert np.abs(unchanged.astype(int) - blurred.astype(int)).max() <= 1


@pytest.mark.parametrize("width", [128, 131], ids=["even-width", "odd-width"])
def test_the_half_spectrum_deconvolution_is_the_fft_inverse_filter(face_crop, width):
    """The graph computes half of the spectrum (a real image's is Hermitian): its result must be the same
    regularised inverse filter as a full complex FFT gives, for even and odd padded widths."""
    blurred = apply_kernel(cv2.resize(face_crop, (width, 128)), camera_shake_kernel(np.random.default_rng(5), 10, 6))
    image = to_tensor(np.clip(np.rint(blurred), 0, 255).astype(np.uint8)).double()
    kernel = torch.from_numpy(fit_kernel(camera_shake_kernel(np.random.default_rng(5), 10, 6), 21))[None].double()
    weight = torch.tensor([3e-3], dtype=torch.float64)
    ours = regularised_deconvolution(image, kernel, weight).double()
    pad = kernel.shape[-1] // 2
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad), mode="replicate")
    rows, cols = padded.shape[-2:]
    centred = torch.zeros(rows, cols, dtype=torch.float64)  # the correlation kernel's centre at the origin
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            centred[dy % rows, dx % cols] += kernel[0, dy + pad, dx + pad]
    transfer = torch.fft.fft2(centred)  # K; the blur (a correlation) multiplies the spectrum by conj(K)
    y, x = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    smoothness = 4 - 2 * torch.cos(2 * np.pi * y / rows) - 2 * torch.cos(2 * np.pi * x / cols)
    inverse = transfer / (transfer.abs() ** 2 + weight * smoothness + 1e-4)
    expected = torch.fft.ifft2(torch.fft.fft2(padded) * inverse).real[..., pad:pad + 128, pad:pad + width]
    assert float((ours - expected).abs().max()) < 1e-3  # float32 matrix products against a float64 FFT
    assert float((expected - image).abs().max()) > 0.1  # and the filter did change the face


def _restore_with(onnx_path: Path, damaged: np.ndarray) -> np.ndarray:
    return FaceRestorer(onnx_path, provider="cpu", colour_lock=False).restore_batch([damaged])[0]


def test_kernel_aware_model_started_from_a_plain_unet_restores_exactly_as_it(face_crop, tmp_path):
    """`--init` from a plain U-Net (0.2.0's shape, here with random weights) copies it into the kernel-aware
    model, whose new inputs start at zero: the exported kernel-aware model restores exactly as the plain one."""
    torch.manual_seed(0)
    unet_shape = {key: value for key, value in MODEL_SIZES["kernel-aware"].items()
                  if key not in ("kernel_size", "estimator_width")}
    plain = build_model(unet_shape)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.normal_(0.0, 0.02)
    plain_path = tmp_path / "plain.onnx"
    export_onnx(plain.eval(), plain_path, {"name": "plain-test", "version": "test"}, crop_size=128)
    model = build_model(MODEL_SIZES["kernel-aware"])
    assert isinstance(model, KernelAwareRestorer)
    copied, added = initialise_from(model, plain_path)
    assert copied > 0 and added > 0  # the U-Net comes from the plain model, the kernel estimator is new
    aware_path = tmp_path / "kernel-aware.onnx"
    assert export_onnx(model.eval(), aware_path, {"name": "kernel-aware-test", "version": "test"}, crop_size=128) < 1e-3
    damaged = degrade(face_crop, "defocus", np.random.default_rng(0), "moderate").image
    before, after = _restore_with(plain_path, damaged), _restore_with(aware_path, damaged)
    assert np.abs(before.astype(int) - damaged.astype(int)).max() > 1  # the random U-Net does change the face
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 1


def test_the_shipped_model_is_the_campaign_design_and_resumes_from_its_own_onnx(face_crop, tmp_path):
    """The campaign falls back to `--init` from the shipped ONNX: every tensor of the campaign's design must
    come back from it (none left new), and the re-exported model must restore exactly as the shipped one."""
    model = build_model(MODEL_SIZES["kernel-aware-deep"])
    copied, added = initialise_from(model, default_model_path())
    assert added == 0 and copied == len(model.state_dict())
    onnx_path = tmp_path / "resumed.onnx"
    # export_onnx checks parity with PyTorch at 128x128 and at 160x96: the sizes stay dynamic
    assert export_onnx(model.eval(), onnx_path, {"name": "resumed-test", "version": "test"}, crop_size=128) < 1e-3
    damaged = degrade(face_crop, "motion_blur", np.random.default_rng(0), "severe").image
    shipped, resumed = _restore_with(default_model_path(), damaged), _restore_with(onnx_path, damaged)
    assert np.abs(shipped.astype(int) - resumed.astype(int)).max() <= 1
    # a plain U-Net of the same widths and depths takes the shipped model's U-Net: every tensor but the first
    # convolution's weights, which see the deconvolved face too
    plain = build_model({key: value for key, value in MODEL_SIZES["kernel-aware-deep"].items()
                         if key not in ("kernel_size", "estimator_width", "frequency_mixing")})
    assert initialise_from(plain, default_model_path()) == (len(plain.state_dict()) - 1, 1)
    assert torch.equal(plain.state_dict()["encoders.0.0.conv1.weight"],
                       model.state_dict()["restorer.encoders.0.0.conv1.weight"])


def test_the_deep_size_grown_from_the_campaign_checkpoint_computes_as_it_did(face_crop):
    """The campaign grew kernel-aware-deep out of its kernel-aware-frequency checkpoint (campaign/shallow/):
    every tensor of it is taken and the added blocks start as the identity, so the grown network restores
    as the checkpoint did until it trains; and it records the checkpoint's training as inherited."""
    from facedeblur.trainer.arch import exported_weights
    from facedeblur.trainer.train import inherited_training, read_model_file

    checkpoint_path = REPO / "campaign" / "shallow" / "carry.pt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    assert checkpoint["model_config"] == MODEL_SIZES["kernel-aware-frequency"]
    shallow = build_model(checkpoint["model_config"]).eval()
    shallow.load_state_dict(exported_weights(checkpoint))
    deep = build_model(MODEL_SIZES["kernel-aware-deep"]).eval()
    copied, added = initialise_from(deep, checkpoint_path)
    assert copied == len(shallow.state_dict()) and added == len(deep.state_dict()) - copied > 0
    damaged = to_tensor(degrade(face_crop, "motion_blur", np.random.default_rng(1), "severe").image)
    with torch.no_grad():
        before, after = shallow(damaged), deep(damaged)
    assert (before - damaged).abs().max() > 0.05  # the checkpoint does restore
    assert (before - after).abs().max() < 1e-5
    inherited = inherited_training(read_model_file(checkpoint_path)[1], checkpoint_path)
    assert inherited["hours"] > 12 and inherited["steps"] == checkpoint["step"]
    assert inherited["samples"] == checkpoint["history"][-1]["samples"]
    assert inherited["model_config"] == MODEL_SIZES["kernel-aware-frequency"]


def test_an_exported_model_re_exports_from_its_onnx_with_its_training_record(face_crop, tmp_path):
    """`train export MODEL.onnx` rebuilds the network from the file (weights and configuration) and writes it
    through the current graph code: same restorations, same training record, the version given."""
    import onnx

    out = tmp_path / "re-exported.onnx"
    subprocess.run([sys.executable, "-m", "facedeblur", "train", "export", str(default_model_path()), "-o", str(out),
                    "--version", "9.9.9-test"], check=True, cwd=REPO, timeout=600, capture_output=True)
    damaged = degrade(face_crop, "defocus", np.random.default_rng(1), "severe").image
    shipped, again = _restore_with(default_model_path(), damaged), _restore_with(out, damaged)
    assert np.abs(shipped.astype(int) - again.astype(int)).max() <= 1
    before = {entry.key: entry.value for entry in onnx.load(str(default_model_path())).metadata_props}
    after = {entry.key: entry.value for entry in onnx.load(str(out)).metadata_props}
    assert after["version"] == "9.9.9-test"
    for key in ("model_config", "training", "metrics"):
        assert json.loads(after[key]) == json.loads(before[key])
    assert after["training_data"] == before["training_data"]
    # a file that is not a facedeblur restorer is refused with the reason, not a traceback
    bad = subprocess.run([sys.executable, "-m", "facedeblur", "train", "export", str(tmp_path / "missing.onnx"), "-o",
                          str(tmp_path / "x.onnx")], cwd=REPO, timeout=600, capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.onnx" in bad.stderr and "Traceback" not in bad.stderr


def test_the_regularisation_learns_only_from_faces_deconvolved_with_the_estimate(face_crop):
    """Training hands some faces a perturbed true kernel instead of the estimate. Their loss must not move
    the regularisation (the shipped graph always deconvolves with the estimate), but it must still train the
    U-Net; a face deconvolved with its estimate trains both."""
    torch.manual_seed(0)
    model = build_model(MODEL_SIZES["kernel-aware"])
    torch.nn.init.normal_(model.restorer.tail.weight, std=0.05)  # zero at the start: nothing would train
    blurred = np.clip(apply_kernel(face_crop, defocus_kernel(3.0)), 0, 255).astype(np.uint8)
    faces = torch.cat([to_tensor(blurred), to_tensor(blurred)])
    given = torch.from_numpy(fit_kernel(defocus_kernel(3.5), 33))[None].expand(2, 33, 33)
    regularisation_row = model.estimator.mlp[-1]

    def gradients(face: int) -> tuple[float, float]:
        model.zero_grad()
        output = model(faces, kernel=given, use_given=torch.tensor([True, False]))
        output[face].sum().backward()
        return (float(regularisation_row.bias.grad[-1].abs()),
                float(model.restorer.head.weight.grad.abs().sum()))

    given_face, estimate_face = gradients(0), gradients(1)
    assert given_face[0] == 0.0 and given_face[1] > 0
    assert estimate_face[0] > 0 and estimate_face[1] > 0


def test_frequency_mixing_sees_the_whole_face_and_exports_with_dynamic_sizes(tmp_path):
    """Once trained (here: random weights in its zero-initialised output), the bottleneck's frequency block
    makes every output pixel depend on the whole input, and the DFT-as-matrix-products graph keeps its
    parity with PyTorch at two crop sizes."""
    torch.manual_seed(0)
    model = build_model(MODEL_SIZES["kernel-aware-frequency"]).eval()
    block = model.restorer.frequency
    torch.nn.init.normal_(block.mix[-1].weight, std=0.05)
    torch.nn.init.normal_(model.restorer.tail.weight, std=0.05)
    features = torch.rand(1, block.mix[0].in_channels // 2, 8, 12, requires_grad=True)
    (block(features) - features)[0, :, 0, 0].sum().backward()
    assert bool((features.grad.abs().sum(dim=1) > 0).all())  # the top-left output depends on every position
    difference = export_onnx(model, tmp_path / "frequency.onnx", {"name": "frequency-test", "version": "test"},
                             crop_size=128)
    assert difference < 1e-3


@pytest.mark.slow
def test_training_learns_the_kernel_and_reports_the_oracle_beside_the_estimate(cache, tmp_path):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "facedeblur", "train", "run", "--data", str(cache), "--out", str(run),
            "--size", "kernel-aware", "--width", "8", "--batch", "4", "--patch", "64", "--val-every", "12",
            "--val-count", "33", "--workers", "0", "--lr", "1e-3", "--warmup", "1"]
    subprocess.run(base + ["--steps", "12"], check=True, cwd=REPO, timeout=600)
    first = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    # the two validation faces get motion blur and defocus: both have a true kernel to compare with
    for key in ("oracle_gain_by_category", "estimate_gain_by_category"):
        assert set(first[key]) == {"motion_blur", "defocus"}, first
    assert first["samples"] == 48
    subprocess.run(base + ["--steps", "24", "--resume"], check=True, cwd=REPO, timeout=600)
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 24 and checkpoint["training_summary"]["samples"] == 96
    assert checkpoint["model_config"]["kernel_size"] == 33

    # the estimator trained on these faces now tells a blurred face from a sharp one
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    from facedeblur.trainer.dataset import load_split
    crops, _ = load_split(cache, "train")
    sharp = torch.cat([to_tensor(c) for c in crops])
    blurred = torch.cat([to_tensor(np.clip(apply_kernel(c, defocus_kernel(2.5)), 0, 255).astype(np.uint8))
                         for c in crops])
    with torch.no_grad():
        centre = lambda k: k[:, 16, 16].mean().item()
        assert centre(model.estimator(blurred)[0]) < centre(model.estimator(sharp)[0])

    # the regularisation probe reads the checkpoint and prints a gain per validation case and scale
    probe = subprocess.run([sys.executable, str(REPO / "scripts" / "probe_regularisation.py"), str(run / "last.pt"),
                            "--data", str(cache), "--faces", "2", "--scales", "1", "0.3"],
                           cwd=REPO, timeout=600, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    rows = {line.split()[0]: line.split()[1:] for line in probe.stdout.splitlines()[1:]}
    assert set(rows) == {"motion_blur/mild", "defocus/mild", "all"} and all(len(v) == 2 for v in rows.values())


def test_validation_knows_which_damage_one_kernel_describes(cache):
    from facedeblur.trainer.dataset import load_split
    from facedeblur.trainer.train import ValidationSet
    crops, _ = load_split(cache, "train")
    validation = ValidationSet(crops, 6)
    kernels, known = validation.true_kernels(33)
    by_category = dict(zip((label.split("/")[0] for label in validation.categories), known.tolist()))
    # blurs and noise have one (a delta for noise); a mosaic or a downscale has none
    assert by_category == {"motion_blur": True, "defocus": True, "gaussian_blur": True, "pixelate": False,
                           "low_resolution": False, "noise": True}
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(6))
    assert kernels[5, 16, 16] == 1.0


def test_identity_loss_runs_the_shipped_sface_and_sees_the_damage(face_crop, shipped_pipeline_models):
    from facedeblur.pipeline.identity import IdentityEmbedder
    from facedeblur.trainer.identity_loss import IdentityLoss
    loss = IdentityLoss(128)
    embedder = IdentityEmbedder(provider="cpu")
    # our template -> SFace's layout inside torch agrees with the pipeline's warp + onnxruntime SFace
    expected = embedder.embed_aligned([face_crop], FACE_TEMPLATE)[0]
    got = loss.embed(to_tensor(face_crop))[0].detach().numpy()
    assert float(expected @ got) > 0.97
    clean = to_tensor(face_crop)
    damaged = to_tensor(degrade(face_crop, "pixelate", np.random.default_rng(0), "severe").image).requires_grad_(True)
    assert loss(clean, clean).item() < 1e-5
    value = loss(damaged, clean)
    assert value.item() > 0.2
    value.backward()
    assert damaged.grad is not None and damaged.grad.abs().sum() > 0
    # the mirrored face is the same person, a face from another crop position is not the same image
    assert loss(torch.flip(clean, dims=[3]), clean).item() < value.item()


@pytest.mark.slow
def test_identity_loss_trains_through_the_cli(cache, tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "facedeblur", "train", "run", "--data", str(cache), "--out", str(run),
                    "--width", "8", "--batch", "2", "--patch", "64", "--val-every", "2", "--val-count", "2",
                    "--workers", "0", "--steps", "2", "--identity-weight", "0.1", "--identity-faces", "1"],
                   check=True, cwd=REPO, timeout=600)
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_a_stopped_trainer_saves_its_last_steps_before_it_exits(cache, tmp_path):
    """SIGTERM (a session's end, a restart with new options) finishes the step, validates and saves a
    checkpoint the campaign resumes from, instead of losing every step since the last one."""
    import signal
    import time

    run = tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, "-m", "facedeblur", "train", "run", "--data", str(cache), "--out", str(run),
                                "--width", "8", "--batch", "2", "--patch", "64", "--val-every", "100000", "--val-count", "2",
                                "--workers", "0", "--steps", "100000"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        for line in trainer.stderr:  # the model is built: the handler is in place and steps are under way
            if line.startswith("model "):
                break
        time.sleep(3)
        trainer.send_signal(signal.SIGTERM)
        _, errors = trainer.communicate(timeout=300)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, errors[-2000:]
    saved = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert 0 < saved["step"] < 100000
    assert (run / "last.pt").is_file() and (run / "carry.pt").is_file()
