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
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm import tqdm

from .. import __version__
from ..errors import FacedeblurError
from ..degradations import CATEGORIES, SEVERITIES, degrade, training_degradation
from .arch import build_model, count_parameters, exported_weights
from .dataset import load_split
from .losses import psnr, restoration_loss
from .options import MODEL_SIZES, build_parser

TRAINING_DATA_NOTE = ("All-Age-Faces (AAF) and UTKFace photos from ../shared/data, research / non-commercial "
                      "use only; see MODEL_CARD.md")


class DegradedFaces(Dataset):
    """Endless stream of (degraded patch, clean patch) pairs; `length` only sets the epoch size."""

    def __init__(self, crops: np.ndarray, patch: int, seed: int, length: int = 10 ** 7):
        self.crops, self.patch, self.seed, self.length = crops, patch, seed, length
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = self.rng
        clean = self.crops[rng.integers(len(self.crops))]
        if rng.random() < 0.5:
            clean = clean[:, ::-1]
        clean = np.ascontiguousarray(clean)
        degraded = training_degradation(clean, rng).image  # damage the whole crop: blur needs its context
        size = clean.shape[0]
        if self.patch < size:
            y, x = rng.integers(0, size - self.patch + 1, size=2)
            clean = clean[y:y + self.patch, x:x + self.patch]
            degraded = degraded[y:y + self.patch, x:x + self.patch]
        # uint8 across the worker pipes and to the device (a quarter of float32's bytes); made float there
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1)))
        return to_tensor(degraded), to_tensor(clean)


def _seed_worker(_: int) -> None:
    cv2.setNumThreads(1)  # one process per worker is the parallelism; inner threads only oversubscribe
    torch.set_num_threads(1)
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng([info.dataset.seed, info.id, int(os.environ.get("RANK", 0))])


def make_validation_set(crops: np.ndarray, count: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fixed degraded/clean pairs, cycling through every category at every severity, identical across runs."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(crops), size=min(count, len(crops)), replace=False)
    pairs = [(category, severity) for severity in SEVERITIES for category in CATEGORIES]
    degraded, clean, categories = [], [], []
    for i, index in enumerate(chosen):
        category, severity = pairs[i % len(pairs)]
        degraded.append(degrade(crops[index], category, rng, severity).image)
        clean.append(crops[index])
        categories.append(f"{category}/{severity}")
    stack = lambda arrays: torch.from_numpy(np.stack(arrays)[:, :, :, ::-1].transpose(0, 3, 1, 2).copy()).float() / 255
    return stack(degraded), stack(clean), categories


@torch.no_grad()
def validate(model: torch.nn.Module, degraded: torch.Tensor, clean: torch.Tensor, device: torch.device,
             grid_path: Path | None = None) -> dict:
    model.eval()
    outputs = torch.cat([model(degraded[i:i + 32].to(device)).float().clamp(0, 1).cpu()
                         for i in range(0, len(degraded), 32)])
    model.train()
    gain = (psnr(outputs, clean) - psnr(degraded, clean)).mean().item()
    result = {"psnr_input": psnr(degraded, clean).mean().item(), "psnr_output": psnr(outputs, clean).mean().item(),
              "psnr_gain": gain}
    if grid_path is not None:
        rows = [torch.cat([degraded[i], outputs[i], clean[i]], dim=2) for i in range(min(10, len(clean)))]
        grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
        cv2.imwrite(str(grid_path), grid)
    return result


def initialise_from(model: torch.nn.Module, source: Path) -> tuple[int, int]:
    """Copy matching weights from an exported .onnx model (its initialisers keep the PyTorch names) or a
    .pt checkpoint. Tensors the source lacks keep their fresh values, except that each new residual
    block's last convolution is zeroed, so an added block starts as the identity and the network starts
    exactly where the source model was. Returns (tensors copied, tensors left new)."""
    if not source.is_file():
        raise FacedeblurError(f"--init {source}: not found; pass a facedeblur .onnx model or a .pt checkpoint")
    if source.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                   for t in onnx.load(str(source)).graph.initializer}
    else:
        weights = exported_weights(torch.load(str(source), map_location="cpu", weights_only=False))
    state = model.state_dict()
    copied = {name: weights[name] for name, value in state.items()
              if name in weights and tuple(weights[name].shape) == tuple(value.shape)}
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


def train(args: argparse.Namespace) -> dict:
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
    is_main = rank == 0
    train_crops, _ = load_split(Path(args.data), "train")  # first: bad --data leaves no empty run folder
    val_crops, _ = load_split(Path(args.data), "val")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = model_config_from(args)
    # On a GPU: channels-last lets cuDNN use the tensor cores for bf16 convolutions without transposes
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = build_model(model_config).to(device, memory_format=memory_format)
    ema = build_model(model_config).to(device, memory_format=memory_format)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4,
                                  fused=device.type == "cuda")  # one kernel for all tensors on a GPU
    start_step, history, warm_from = 0, [], 0
    checkpoint_path, carry_path = out / "last.pt", out / "carry.pt"
    resume_from = next((path for path in (checkpoint_path, carry_path) if args.resume and path.exists()), None)
    if resume_from:
        checkpoint = torch.load(resume_from, map_location="cpu", weights_only=False)
        if checkpoint["model_config"] != model_config:
            raise FacedeblurError(f"{resume_from} holds a {checkpoint['model_config']} model, not {model_config}; "
                                  "resume with the --size and shape options it was trained with")
        start_step, history = checkpoint["step"], checkpoint.get("history", [])
        if checkpoint.get("compact"):
            weights = exported_weights(checkpoint)
            model.load_state_dict(weights)
            ema.load_state_dict(weights)
            warm_from = start_step
            note = f"the compact {resume_from} at step {start_step} (fresh optimiser, {args.warmup} warm-up steps)"
        else:
            model.load_state_dict(checkpoint["model"])
            ema.load_state_dict(checkpoint["ema"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            note = f"{resume_from} at step {start_step}"
        if is_main:
            print(f"resumed from {note}", file=sys.stderr)
    elif args.init:
        loaded, added = initialise_from(model, Path(args.init))
        ema.load_state_dict(model.state_dict())
        if is_main:
            print(f"initialised {loaded} tensors from {args.init}; {added} new tensors start as the identity",
                  file=sys.stderr)
    trained_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    loader = DataLoader(DegradedFaces(train_crops, args.patch, args.seed * 1000 + rank + start_step),
                        batch_size=args.batch, num_workers=args.workers, worker_init_fn=_seed_worker,
                        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
    val_degraded, val_clean, _ = make_validation_set(val_crops, args.val_count)
    use_amp = device.type == "cuda"
    command = "facedeblur train run " + shlex.join(sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv else sys.argv[1:])
    if is_main:
        (out / "command.txt").write_text(command + "\n")
        print(f"model {count_parameters(model):,} parameters, {len(train_crops):,} training faces, "
              f"device {device}{' x' + str(dist.get_world_size()) if distributed else ''}", file=sys.stderr)

    def save(step: int, metrics: dict) -> None:
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "history": history, "model_config": model_config, "crop_size": int(train_crops.shape[1]),
                 "metrics": metrics, "version": __version__, "training_data": TRAINING_DATA_NOTE,
                 "training_summary": {"command": command, "steps": step, "patch": args.patch, "batch": args.batch,
                                      "processes": dist.get_world_size() if distributed else 1,
                                      "device": str(device), "lr": args.lr,
                                      "minutes": round(history[-1].get("minutes", 0.0), 1) if history else 0.0}}
        tmp = out / ".last.pt.part"
        torch.save(state, tmp)
        os.replace(tmp, checkpoint_path)
        save_carry(carry_path, state)

    ema_parameters, model_parameters = list(ema.parameters()), list(model.parameters())
    started = time.time()
    metrics: dict = history[-1] if history else {}
    progress = tqdm(total=args.steps, initial=start_step, disable=not is_main, desc="training", unit="step",
                    dynamic_ncols=True)
    step = start_step
    data_iter = iter(loader)
    previous_minutes = history[-1].get("minutes", 0.0) if history else 0.0
    while step < args.steps:
        degraded, clean = (batch.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=memory_format)
                           for batch in next(data_iter))
        elapsed_minutes = (time.time() - started) / 60
        if distributed and args.max_minutes:
            # Each rank has its own clock: agree on one (the slowest), so every rank uses the same learning
            # rate and all stop at the same step (one rank leaving alone would block the others for ever).
            clock = torch.tensor([elapsed_minutes], device=device, dtype=torch.float64)
            dist.all_reduce(clock, op=dist.ReduceOp.MAX)
            elapsed_minutes = float(clock.item())
        if args.schedule_minutes:  # a run planned over several calls: the schedule spans all of them
            schedule_fraction = (previous_minutes + elapsed_minutes) / args.schedule_minutes
        else:
            schedule_fraction = elapsed_minutes / args.max_minutes if args.max_minutes else 0.0
        rate = lr_at(step, args.steps, args.lr, args.warmup, schedule_fraction, warm_from)
        for group in optimizer.param_groups:
            group["lr"] = rate
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            output = trained_model(degraded)
        loss = restoration_loss(output.float(), clean, args.frequency_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_parameters, model_parameters, 1 - decay)  # one launch, not one per tensor
        step += 1
        progress.update(1)
        out_of_time = bool(args.max_minutes) and elapsed_minutes >= args.max_minutes  # the agreed clock
        if is_main and (step % args.val_every == 0 or step == args.steps or out_of_time):
            metrics = validate(ema, val_degraded, val_clean, device, out / f"val-{step:07d}.png")
            metrics.update(step=step, loss=loss.item(), minutes=round(previous_minutes + (time.time() - started) / 60, 2))
            history.append(metrics)
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
            save(step, metrics)
        if is_main and step % 50 == 0:  # .item() waits for the GPU: not every step
            progress.set_postfix(loss=f"{loss.item():.4f}", val_gain=f"{metrics.get('psnr_gain', float('nan')):+.2f}dB",
                                 refresh=False)  # the bar redraws at its own interval (TQDM_MININTERVAL)
        if out_of_time:
            break
    progress.close()
    if is_main:
        seconds = max(time.time() - started, 1e-9)
        print(f"trained {step - start_step} steps in {seconds / 60:.1f} min: {(step - start_step) / seconds:.1f} steps/s, "
              f"{(step - start_step) * args.batch * (dist.get_world_size() if distributed else 1) / seconds:.0f} "
              "samples/s", file=sys.stderr)
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
