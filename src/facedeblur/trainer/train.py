"""`facedeblur train run`: the training loop, readable in one sitting.

Clean aligned crops from the prepared cache are damaged on the fly (numpy/OpenCV degradations in
DataLoader workers), the model learns to undo the damage. Progress bar with loss, validation PSNR and
ETA; periodic validation with an image grid; checkpoints and --resume; bf16 autocast on GPU; multi-GPU
(or multi-process CPU, gloo) through torchrun/DDP.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm import tqdm

from .. import __version__
from ..errors import FacedeblurError
from ..degradations import CATEGORIES, NO_BLUR, SEVERITIES, degrade, misalign, training_degradation
from .arch import build_model, count_parameters, exported_weights, onnx_model_record
from .dataset import load_split
from .losses import psnr, restoration_loss
from .options import MODEL_SIZES, build_parser

TRAINING_DATA_NOTE = ("All-Age-Faces (AAF) and UTKFace photos from ../shared/data, research / non-commercial "
                      "use only; see MODEL_CARD.md")


def fit_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """A blur kernel centred in a size x size grid (cropped if larger, then renormalised)."""
    kernel = np.asarray(kernel, np.float32)
    if kernel.shape[0] > size:
        cut = (kernel.shape[0] - size) // 2
        kernel = kernel[cut:cut + size, cut:cut + size]
    grid = np.zeros((size, size), np.float32)
    start = (size - kernel.shape[0]) // 2
    grid[start:start + kernel.shape[0], start:start + kernel.shape[1]] = kernel
    return grid / max(float(grid.sum()), 1e-8)


def perturb_kernel(kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausibly wrong estimate of a true kernel: resized by up to 25 %, shifted by up to a pixel, and
    with multiplicative noise on its weights."""
    side = kernel.shape[0]
    new_side = max(1, int(round(side * rng.uniform(0.75, 1.3)))) | 1
    if new_side != side:
        kernel = cv2.resize(kernel, (new_side, new_side), interpolation=cv2.INTER_LINEAR)
    kernel = np.pad(kernel, 1)
    kernel = np.roll(kernel, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    kernel = np.clip(kernel * rng.uniform(0.7, 1.3, size=kernel.shape), 0, None).astype(np.float32)
    return kernel / max(float(kernel.sum()), 1e-8)


class DegradedFaces(Dataset):
    """Endless stream of (degraded patch, clean patch) pairs; `length` only sets the epoch size.

    For a kernel-aware model (`kernel_size` > 0) each pair also carries the true blur kernel where the
    damage has one (and whether it does), and a perturbed copy of it that the model is given instead of
    its own estimate for a `substitute` share of the faces.

    A `misaligned` share of the faces is first cut a little off the alignment (target and damage alike): at
    run time the landmarks come from the damaged face, and a model trained only on perfectly aligned crops
    leans on the alignment (cut 3 px, 4 degrees and 6 % off: 0.7 dB less on defocus and Gaussian blur, 0.6 on
    camera shake)."""

    def __init__(self, crops: np.ndarray, patch: int, seed: int, length: int = 10 ** 7, kernel_size: int = 0,
                 substitute: float = 0.0, misaligned: float = 0.0):
        self.crops, self.patch, self.seed, self.length = crops, patch, seed, length
        self.kernel_size, self.substitute, self.misaligned = kernel_size, substitute, misaligned
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = self.rng
        clean = self.crops[rng.integers(len(self.crops))]
        if rng.random() < 0.5:
            clean = clean[:, ::-1]
        clean = np.ascontiguousarray(clean)
        if self.misaligned and rng.random() < self.misaligned:
            clean = misalign(clean, rng)
        damage = training_degradation(clean, rng)  # damage the whole crop: blur needs its context
        degraded = damage.image
        size = clean.shape[0]
        if self.patch < size:
            y, x = rng.integers(0, size - self.patch + 1, size=2)
            clean = clean[y:y + self.patch, x:x + self.patch]
            degraded = degraded[y:y + self.patch, x:x + self.patch]
        # uint8 across the worker pipes and to the device (a quarter of float32's bytes); made float there
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1)))
        if not self.kernel_size:
            return to_tensor(degraded), to_tensor(clean)
        known = damage.psf is not None
        true_kernel = fit_kernel(damage.psf if known else NO_BLUR, self.kernel_size)
        use_given = known and rng.random() < self.substitute
        given = fit_kernel(perturb_kernel(damage.psf, rng), self.kernel_size) if use_given else true_kernel
        return (to_tensor(degraded), to_tensor(clean), torch.from_numpy(true_kernel), torch.tensor(known),
                torch.from_numpy(given), torch.tensor(use_given))


def _seed_worker(_: int) -> None:
    cv2.setNumThreads(1)  # one process per worker is the parallelism; inner threads only oversubscribe
    torch.set_num_threads(1)
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng([info.dataset.seed, info.id, int(os.environ.get("RANK", 0))])


class ValidationSet:
    """Fixed degraded/clean pairs, cycling through every category at every severity, identical across runs,
    with each pair's category and true blur kernel (where one kernel describes the damage). Each pair's damage
    is drawn from its own seed, so a change to one category's damage redraws no other pair."""

    def __init__(self, crops: np.ndarray, count: int, seed: int = 1234):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(crops), size=min(count, len(crops)), replace=False)
        pairs = [(category, severity) for severity in SEVERITIES for category in CATEGORIES]
        degraded, clean, self.categories, self.kernels = [], [], [], []
        for i, index in enumerate(chosen):
            category, severity = pairs[i % len(pairs)]
            damage = degrade(crops[index], category, np.random.default_rng([seed, i]), severity)
            degraded.append(damage.image)
            clean.append(crops[index])
            self.categories.append(f"{category}/{severity}")
            self.kernels.append(damage.psf)
        stack = lambda arrays: torch.from_numpy(np.stack(arrays)[:, :, :, ::-1].transpose(0, 3, 1, 2).copy()).float() / 255
        self.degraded, self.clean = stack(degraded), stack(clean)

    def true_kernels(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernels, known): the true kernels on a size x size grid, and which pairs have one."""
        known = torch.tensor([kernel is not None for kernel in self.kernels])
        kernels = np.stack([fit_kernel(NO_BLUR if k is None else k, size) for k in self.kernels])
        return torch.from_numpy(kernels), known


def _gain_by_category(gains: torch.Tensor, categories: list[str]) -> dict[str, float]:
    by_category: dict[str, list[float]] = {}
    for gain, label in zip(gains.tolist(), categories):
        by_category.setdefault(label.split("/")[0], []).append(gain)
    return {name: round(float(np.mean(values)), 3) for name, values in by_category.items()}


@torch.no_grad()
def kernel_errors(model: torch.nn.Module, validation: ValidationSet, kernels: torch.Tensor, known: torch.Tensor,
                  labels: list[str], device: torch.device) -> dict:
    """The estimator's reblur error (kernel_estimate_loss) per blur category, beside the error of the
    "no blur" guess: an estimator that has collapsed to a delta for every face shows the same number in both,
    while its gain with the estimate stays at the plain U-Net's."""
    model.eval()
    degraded = validation.degraded[known]
    estimates = torch.cat([model.estimator(degraded[i:i + 32].to(device))[0].float().cpu()
                           for i in range(0, len(degraded), 32)])
    model.train()
    clean, true = validation.clean[known], kernels[known]
    delta = torch.from_numpy(fit_kernel(NO_BLUR, true.shape[-1])).expand_as(true)
    errors: dict[str, dict[str, float]] = {"kernel_error_by_category": {}, "no_blur_kernel_error_by_category": {}}
    for category in sorted(set(labels)):
        rows = torch.tensor([label == category for label in labels])
        everyone = torch.ones(int(rows.sum()), dtype=torch.bool)
        errors["kernel_error_by_category"][category] = round(
            kernel_estimate_loss(estimates[rows], true[rows], everyone, clean[rows]).item(), 5)
        errors["no_blur_kernel_error_by_category"][category] = round(
            kernel_estimate_loss(delta[rows], true[rows], everyone, clean[rows]).item(), 5)
    return errors


def validate(model: torch.nn.Module, validation: ValidationSet, device: torch.device,
             grid_path: Path | None = None) -> dict:
    """Mean PSNR gain, and per category; for a kernel-aware model also the gain when it is given the TRUE
    kernel instead of its own estimate (the ceiling the estimator is measured against)."""
    degraded, clean = validation.degraded, validation.clean

    def run(kernels: torch.Tensor | None = None) -> torch.Tensor:
        model.eval()
        parts = []
        for i in range(0, len(degraded), 32):
            extra = {} if kernels is None else {"kernel": kernels[i:i + 32].to(device)}
            parts.append(model(degraded[i:i + 32].to(device), **extra).float().clamp(0, 1).cpu())
        model.train()
        return torch.cat(parts)

    outputs = run()
    input_psnr = psnr(degraded, clean)
    gains = psnr(outputs, clean) - input_psnr
    result = {"psnr_input": input_psnr.mean().item(), "psnr_output": psnr(outputs, clean).mean().item(),
              "psnr_gain": gains.mean().item(), "gain_by_category": _gain_by_category(gains, validation.categories)}
    kernel_size = getattr(model, "config", {}).get("kernel_size")
    if kernel_size:
        kernels, known = validation.true_kernels(kernel_size)
        oracle_gains = psnr(run(kernels), clean) - input_psnr
        labels = [label for label, has in zip(validation.categories, known.tolist()) if has]
        result["oracle_gain_by_category"] = _gain_by_category(oracle_gains[known], labels)
        result["estimate_gain_by_category"] = _gain_by_category(gains[known], labels)
        result.update(kernel_errors(model, validation, kernels, known, labels, device))
    if grid_path is not None:
        rows = [torch.cat([degraded[i], outputs[i], clean[i]], dim=2) for i in range(min(10, len(clean)))]
        grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
        cv2.imwrite(str(grid_path), grid)
    return result


def read_model_file(source: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and the bookkeeping (`model_config`, `training_summary`) of an exported .onnx model (its
    initialisers keep the PyTorch names, its metadata the record) or of a .pt checkpoint: `--init` reads
    both from one load of the file."""
    if not source.is_file():
        raise FacedeblurError(f"--init {source}: not found; pass a facedeblur .onnx model or a .pt checkpoint")
    if source.suffix == ".onnx":
        import onnx
        return onnx_model_record(onnx.load(str(source)))
    checkpoint = torch.load(str(source), map_location="cpu", weights_only=False)
    return exported_weights(checkpoint), checkpoint


def initialise_from(model: torch.nn.Module, source: Path) -> tuple[int, int]:
    """Copy matching weights from an exported .onnx model or a .pt checkpoint (`copy_matching_weights`)."""
    return copy_matching_weights(model, read_model_file(source)[0], source)


def copy_matching_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> tuple[int, int]:
    """Copy the weights of `source` that fit the model. Tensors the source lacks keep their fresh values,
    except that each new residual block's last convolution is zeroed, so an added block starts as the
    identity and the network starts exactly where the source model was. Returns (tensors copied, tensors
    left new)."""
    state = model.state_dict()
    copied = {}
    for name, value in state.items():
        # A kernel-aware model holds the plain U-Net as `restorer.`: a plain model's weights fit it there,
        # and a plain model takes the U-Net out of a kernel-aware one (the shipped model since 0.3.0)
        source_name = next((candidate for candidate in (name, name.removeprefix("restorer."), f"restorer.{name}")
                            if candidate in weights), None)
        if source_name is None:
            continue
        source_value = weights[source_name]
        if tuple(source_value.shape) == tuple(value.shape):
            copied[name] = source_value
        elif _widened_input(source_value.shape, value.shape):
            # the head given more input channels: the old ones keep their weights, the new ones start at
            # zero, so the network starts exactly where the source model was
            widened = torch.zeros_like(value)
            widened[:, :source_value.shape[1]] = source_value
            copied[name] = widened
    if not copied:
        raise FacedeblurError(f"--init {source}: no weights match this model's shape; use the same --width, "
                              "--levels and --unshuffle as the source model")
    model.load_state_dict(copied, strict=False)
    added = [name for name in state if name not in copied]
    with torch.no_grad():
        for name in added:
            if name.endswith(("conv2.weight", "conv2.bias")):
                model.get_parameter(name).zero_()
    return len(copied), len(added)


def _widened_input(source: torch.Size, target: torch.Size) -> bool:
    return (len(source) == 4 and len(target) == 4 and source[0] == target[0] and source[2:] == target[2:]
            and source[1] < target[1])


def model_config_from(args: argparse.Namespace) -> dict:
    """The `--size` preset, with any shape option given on the command line taking precedence."""
    config = dict(MODEL_SIZES[args.size])
    overrides = dict(width=args.width, levels=args.levels, blocks_per_level=args.blocks,
                     middle_blocks=args.middle_blocks, unshuffle=args.unshuffle)
    config.update({key: value for key, value in overrides.items() if value is not None})
    return config


def save_carry(path: Path, state: dict) -> None:
    """The compact checkpoint carried between calls to a GPU machine (64 MiB per call, data included):
    the EMA weights in float16 and the run's bookkeeping, no optimiser state and no live weights. A run
    resumed from it restarts from the averaged weights with a fresh optimiser and a short warm-up."""
    carry = {key: value for key, value in state.items() if key not in ("model", "ema", "optimizer")}
    carry["ema"] = {name: tensor.detach().to("cpu", torch.float16) for name, tensor in state["ema"].items()}
    carry["compact"] = True
    tmp = path.with_name(f".{path.name}.part")
    torch.save(carry, tmp)
    os.replace(tmp, path)


def lr_at(step: int, total: int, peak: float, warmup: int, time_fraction: float = 0.0, warm_from: int = 0) -> float:
    """Cosine decay to 2% of the peak, after a linear ramp of `warmup` steps from `warm_from` (where the
    optimiser is new: the start, or a machine that resumed from the compact carry.pt). With a time
    budget, the schedule follows whichever runs out first, steps or minutes, so a run stopped by the
    clock still ends annealed."""
    progress = max(step / max(1, total), time_fraction)
    ramp = min(1.0, (step - warm_from + 1) / max(1, warmup))
    return ramp * peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast with channels-last
    about halves a training step; elsewhere it emulates bf16 and is slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def setup_device(args: argparse.Namespace) -> tuple[torch.device, int, bool]:
    """(device, rank, distributed), with the process group joined when torchrun started several ranks."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return device, rank, distributed


def use_bf16(args: argparse.Namespace, device: torch.device) -> bool:
    if args.precision != "auto":
        return args.precision == "bf16"
    return device.type == "cuda" or native_bf16_cpu()


def inherited_training(bookkeeping: dict, source: Path) -> dict:
    """The training a model started with `--init` inherits from its source (`read_model_file`'s
    bookkeeping): the source's own steps, hours and samples plus whatever the source itself inherited, so a
    model grown from another records all the training its weights have seen. Empty when the source records
    none."""
    record = bookkeeping.get("training_summary") or {}
    if not record:
        return {}
    before = record.get("inherited", {})
    return {"source": f"{source.parent.name}/{source.name}", "model_config": bookkeeping.get("model_config", {}),
            "steps": int(record.get("steps", 0)),
            "hours": round(float(record.get("hours", 0.0)) + float(before.get("hours", 0.0)), 2),
            "samples": int(record.get("samples", 0)) + int(before.get("samples", 0))}


def start_state(args: argparse.Namespace, model: torch.nn.Module, ema: torch.nn.Module,
                optimizer: torch.optim.Optimizer, model_config: dict, out: Path) -> tuple[int, list, int, str, dict]:
    """Resume (a full last.pt, else the compact carry.pt), or initialise from --init, or start fresh.
    Returns (start step, history, the step the optimiser became new at, what was done, the training the
    weights inherited through --init)."""
    resume_from = next((path for path in (out / "last.pt", out / "carry.pt") if args.resume and path.exists()), None)
    if resume_from:
        checkpoint = torch.load(resume_from, map_location="cpu", weights_only=False)
        if checkpoint["model_config"] != model_config:
            raise FacedeblurError(f"{resume_from} holds a {checkpoint['model_config']} model, not {model_config}; "
                                  "resume with the --size and shape options it was trained with")
        start_step, history = checkpoint["step"], checkpoint.get("history", [])
        inherited = checkpoint.get("training_summary", {}).get("inherited", {})
        if checkpoint.get("compact"):
            weights = exported_weights(checkpoint)
            model.load_state_dict(weights)
            ema.load_state_dict(weights)
            return (start_step, history, start_step, f"resumed from the compact {resume_from} at step {start_step} "
                    f"(fresh optimiser, {args.warmup} warm-up steps)", inherited)
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        return start_step, history, 0, f"resumed from {resume_from} at step {start_step}", inherited
    if args.init:
        source = Path(args.init)
        weights, bookkeeping = read_model_file(source)
        loaded, added = copy_matching_weights(model, weights, source)
        ema.load_state_dict(model.state_dict())
        return (0, [], 0, f"initialised {loaded} tensors from {args.init}; {added} new tensors start fresh",
                inherited_training(bookkeeping, source))
    return 0, [], 0, "", {}


def build_training(args: argparse.Namespace, model_config: dict, device: torch.device,
                   memory_format: torch.memory_format) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """(model, its EMA copy for validation and export, the optimiser)."""
    model = build_model(model_config).to(device, memory_format=memory_format)
    ema = build_model(model_config).to(device, memory_format=memory_format)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4,
                                  fused=device.type == "cuda")  # one kernel for all tensors on a GPU
    return model, ema, optimizer


def training_totals(history: list[dict], inherited: dict | None = None) -> dict:
    """Training time and samples seen over every call of the run so far: what the exported model records.
    With `inherited` (the training of the weights --init started from), also the totals over both."""
    last = history[-1] if history else {}
    minutes = last.get("minutes", 0.0)
    totals = {"minutes": round(minutes, 2), "hours": round(minutes / 60, 2), "samples": last.get("samples", 0)}
    if inherited:
        totals.update(total_hours=round(totals["hours"] + inherited.get("hours", 0.0), 2),
                      total_samples=totals["samples"] + inherited.get("samples", 0))
    return totals


def save_checkpoint(out: Path, state: dict) -> None:
    """last.pt (everything, to resume on this machine) and the compact carry.pt, each written atomically."""
    tmp = out / ".last.pt.part"
    torch.save(state, tmp)
    os.replace(tmp, out / "last.pt")
    save_carry(out / "carry.pt", state)


def kernel_estimate_loss(estimated: torch.Tensor, true_kernel: torch.Tensor, known: torch.Tensor,
                         clean: torch.Tensor) -> torch.Tensor:
    """How far the clean faces blurred by the estimated kernels are from them blurred by the true ones: the
    root of the mean square over all pixels of all faces whose damage has a kernel (per face by Parseval,
    sum |K_est - K_true|^2 |X|^2).

    Measured on the face, not on the kernel map: an error counts as much as it changes this face, which is
    what the deconvolution feels. The root is taken of the batch's mean, not per face and then averaged:
    a mean of per-face errors is an L1 across faces, whose best guess under doubt is the median kernel, and
    in a training mix where most faces have no blur that median is "no blur" for every face (the estimator
    collapses to a delta and stops learning). A mean square's best guess is the mean kernel."""
    if not bool(known.any()):
        return estimated.sum() * 0
    with torch.autocast(clean.device.type, enabled=False):
        grey = clean[known].float().mean(dim=1)
        height, width = grey.shape[-2:]
        difference = F.pad((estimated[known] - true_kernel[known]).float(),
                           (0, width - true_kernel.shape[-1], 0, height - true_kernel.shape[-2]))
        image_power = torch.fft.rfft2(grey).abs() ** 2
        kernel_power = torch.fft.rfft2(difference).abs() ** 2
        # rfft2 keeps half the spectrum: count the columns that stand for two (all but the first and last)
        weights = torch.full((width // 2 + 1,), 2.0, device=clean.device)
        weights[0] = 1.0
        if width % 2 == 0:
            weights[-1] = 1.0
        mse = (kernel_power * image_power * weights).sum(dim=(1, 2)) / (height * width) ** 2
        return torch.sqrt(mse.mean() + 1e-10)


class Losses:
    """The training objective: fidelity (restoration_loss), plus the kernel estimator's own loss for a
    kernel-aware model, plus the SFace identity loss on a few faces of each batch when asked for."""

    def __init__(self, args: argparse.Namespace, crop_size: int, device: torch.device):
        self.args = args
        self.identity = None
        if args.identity_weight > 0:
            from .identity_loss import IdentityLoss
            self.identity = IdentityLoss(crop_size).to(device)

    def __call__(self, model: torch.nn.Module, batch: list[torch.Tensor], kernel_aware: bool) -> torch.Tensor:
        degraded, clean = batch[0], batch[1]
        if kernel_aware:
            true_kernel, known, given, use_given = batch[2:]
            output, estimated = model(degraded, kernel=given, use_given=use_given, return_estimate=True)
            loss = self.args.kernel_weight * kernel_estimate_loss(estimated, true_kernel, known, clean)
        else:
            output, loss = model(degraded), 0.0
        output = output.float()
        loss = loss + restoration_loss(output, clean, self.args.frequency_weight)
        if self.identity is not None:
            faces = slice(0, self.args.identity_faces)
            loss = loss + self.args.identity_weight * self.identity(output[faces], clean[faces])
        return loss


def schedule_fraction(args: argparse.Namespace, previous_minutes: float, elapsed_minutes: float) -> float:
    """How far through its time budget the run is: over all calls of a run planned with --schedule-minutes,
    else over this call's --max-minutes (0 without a time budget: the steps alone set the schedule)."""
    if args.schedule_minutes:
        return (previous_minutes + elapsed_minutes) / args.schedule_minutes
    return elapsed_minutes / args.max_minutes if args.max_minutes else 0.0


def report_speed(steps: int, samples_per_step: int, seconds: float) -> None:
    seconds = max(seconds, 1e-9)
    print(f"trained {steps} steps in {seconds / 60:.1f} min: {steps / seconds:.1f} steps/s, "
          f"{steps * samples_per_step / seconds:.0f} samples/s", file=sys.stderr)


class TrainingClock:
    """Minutes spent training in this call. Each step adds its wall time, except a gap so long that the
    process cannot have been stepping (stopped with SIGSTOP, a suspended machine): that trains nothing, and
    the campaign's hours and its schedule count training only. A step with validation (330 faces) takes
    under 2 minutes here even on a crowded CPU; a benchmark window of 5-10 minutes must not count as training."""

    def __init__(self, pause_seconds: float = 300.0):
        self.pause_seconds = pause_seconds
        self.last = time.monotonic()
        self.training_seconds = 0.0
        self.paused_seconds = 0.0

    def tick(self) -> float:
        now = time.monotonic()
        gap, self.last = now - self.last, now
        if gap > self.pause_seconds:
            self.paused_seconds += gap
            print(f"the trainer was stopped for {gap / 60:.1f} min; not counted as training", file=sys.stderr)
        else:
            self.training_seconds += gap
        return self.training_seconds / 60


def agreed_minutes(minutes: float, device: torch.device, across_ranks: bool) -> float:
    """Across ranks each has its own clock: agree on one (the slowest), so every rank uses the same learning
    rate and all stop at the same step (one rank leaving alone would block the others for ever)."""
    if not across_ranks:
        return minutes
    clock = torch.tensor([minutes], device=device, dtype=torch.float64)
    dist.all_reduce(clock, op=dist.ReduceOp.MAX)
    return float(clock.item())


@torch.no_grad()
def update_ema(ema_parameters: list[torch.Tensor], model_parameters: list[torch.Tensor], ema: float, step: int) -> None:
    decay = min(ema, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema_parameters, model_parameters, 1 - decay)  # one launch, not one per tensor


def log_metrics(out: Path, history: list[dict], metrics: dict) -> None:
    history.append(metrics)
    with open(out / "log.jsonl", "a") as log:
        log.write(json.dumps(metrics) + "\n")


def _to_device(batch: list[torch.Tensor], device: torch.device, memory_format: torch.memory_format) -> list[torch.Tensor]:
    images = [b.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=memory_format) for b in batch[:2]]
    return images + [b.to(device, non_blocking=True) for b in batch[2:]]


class StopRequest:
    """SIGTERM or SIGINT while training: finish the step, validate and save, then return. Otherwise a stop
    (a session's end, a restart with new options) loses every step since the last checkpoint. Not in a
    distributed run, where one process leaving the loop alone would hang the others."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._request)

    def _request(self, number, frame) -> None:
        if self.requested:  # a second signal: stop now, as without this handler
            self.restore()
            signal.raise_signal(number)
        self.requested = True
        print(f"\n{signal.Signals(number).name}: saving a checkpoint after this step, then stopping", file=sys.stderr)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


def train(args: argparse.Namespace) -> dict:
    device, rank, distributed = setup_device(args)
    stop = StopRequest(enabled=not distributed)
    try:
        return _train(args, device, rank, distributed, stop)
    finally:
        stop.restore()


def _train(args: argparse.Namespace, device: torch.device, rank: int, distributed: bool, stop: StopRequest) -> dict:
    is_main = rank == 0
    train_crops, _ = load_split(Path(args.data), "train")  # first: bad --data leaves no empty run folder
    val_crops, _ = load_split(Path(args.data), "val")
    out, model_config, bf16 = Path(args.out), model_config_from(args), use_bf16(args, device)
    out.mkdir(parents=True, exist_ok=True)
    kernel_size = int(model_config.get("kernel_size", 0))
    # channels-last lets cuDNN (tensor cores) and oneDNN (AVX512-BF16) run bf16 convolutions without transposes
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    model, ema, optimizer = build_training(args, model_config, device, memory_format)
    start_step, history, warm_from, note, inherited = start_state(args, model, ema, optimizer, model_config, out)
    if is_main and note:
        print(note, file=sys.stderr)
    trained_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    # the stream's seed moves on with the step, so a resumed run sees new damage, not a replay
    loader = DataLoader(DegradedFaces(train_crops, args.patch, args.seed * 1000 + rank + start_step,
                                      kernel_size=kernel_size, substitute=args.kernel_substitute,
                                      misaligned=args.misalign),
                        batch_size=args.batch, num_workers=args.workers, worker_init_fn=_seed_worker,
                        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
    validation = ValidationSet(val_crops, args.val_count)
    losses = Losses(args, int(train_crops.shape[1]), device)
    processes = dist.get_world_size() if distributed else 1
    command = "facedeblur train run " + shlex.join(sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv else sys.argv[1:])
    if is_main:
        (out / "command.txt").write_text(command + "\n")
        print(f"model {count_parameters(model):,} parameters, {len(train_crops):,} training faces, device {device} x"
              f"{processes}, {'bf16' if bf16 else 'fp32'}", file=sys.stderr)
    previous = training_totals(history)
    previous_minutes, previous_samples = previous["minutes"], previous["samples"]

    summary = dict(command=command, patch=args.patch, batch=args.batch, processes=processes, device=str(device),
                   lr=args.lr, precision="bf16" if bf16 else "fp32", misalign=args.misalign)
    if inherited:
        summary["inherited"] = inherited

    def save(step: int, metrics: dict) -> None:
        save_checkpoint(out, {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "history": history, "model_config": model_config, "crop_size": int(train_crops.shape[1]),
            "metrics": metrics, "version": __version__, "training_data": TRAINING_DATA_NOTE,
            "training_summary": {**summary, "steps": step, **training_totals(history, inherited)}})

    ema_parameters, model_parameters = list(ema.parameters()), list(model.parameters())
    clock, step, data_iter = TrainingClock(), start_step, iter(loader)
    metrics: dict = history[-1] if history else {}
    progress = tqdm(total=args.steps, initial=start_step, disable=not is_main, desc="training", unit="step",
                    dynamic_ncols=True)
    while step < args.steps:
        batch = _to_device(next(data_iter), device, memory_format)
        elapsed_minutes = agreed_minutes(clock.tick(), device, distributed and bool(args.max_minutes))
        fraction = schedule_fraction(args, previous_minutes, elapsed_minutes)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup, fraction, warm_from)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = losses(trained_model, batch, bool(kernel_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        update_ema(ema_parameters, model_parameters, args.ema, step)
        step += 1
        progress.update(1)
        out_of_time = bool(args.max_minutes) and elapsed_minutes >= args.max_minutes  # the agreed clock
        stopping = stop.requested
        if is_main and (step % args.val_every == 0 or step == args.steps or out_of_time or stopping):
            metrics = validate(ema, validation, device, out / f"val-{step:07d}.png")
            metrics.update(step=step, loss=loss.item(), minutes=round(previous_minutes + clock.tick(), 2),
                           samples=previous_samples + (step - start_step) * args.batch * processes)
            log_metrics(out, history, metrics)
            save(step, metrics)
        if is_main and step % 50 == 0:  # .item() waits for the GPU: not every step; the bar redraws at its own pace
            progress.set_postfix(loss=f"{loss.item():.4f}", val_gain=f"{metrics.get('psnr_gain', math.nan):+.2f}dB", refresh=False)
        if out_of_time or stopping:
            break
    progress.close()
    if is_main:
        report_speed(step - start_step, args.batch * processes, clock.training_seconds)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metrics = train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
