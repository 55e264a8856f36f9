"""With --max-minutes, every rank of a distributed run stops at the same step (no DDP hang).

Two real gloo processes on the CPU, as in tests/test_trainer.py. Rank 1's clock is made to run 60x fast
(sitecustomize in the child processes only), so the ranks reach --max-minutes at different steps, as
ranks on different machines or after uneven start-up do.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_trainer import cache, photo_folders  # noqa: E402,F401  (module fixtures: tiny real face crops)

pytestmark = pytest.mark.slow   # real training runs in subprocesses

REPO = Path(__file__).resolve().parents[1]

FAST_CLOCK = '''
import os, time
if os.environ.get("LOCAL_RANK") == "1":
    _real, _origin = time.time, time.time()
    time.time = lambda: _origin + (_real() - _origin) * 60.0
    _real_monotonic, _monotonic_origin = time.monotonic, time.monotonic()
    time.monotonic = lambda: _monotonic_origin + (_real_monotonic() - _monotonic_origin) * 60.0
'''


def test_ranks_agree_on_the_time_limit(cache, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAST_CLOCK, encoding="utf-8")
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "facedeblur.trainer.train", "--data", str(cache), "--out", str(run), "--width", "8", "--batch", "2",
         "--patch", "32", "--steps", "100000", "--val-every", "100000", "--val-count", "2", "--workers", "0",
         "--device", "cpu", "--max-minutes", "0.5"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(run / "last.pt", weights_only=False)
    # Rank 1 ran out of (its) time after about half a second; rank 0 stopped with it, long before its 30 s.
    assert 0 < checkpoint["step"] < 100000 and checkpoint["training_summary"]["processes"] == 2
    assert checkpoint["training_summary"]["minutes"] < 0.4
