"""Loading the config must stay cheap: `serve`, `status` and the daemon's parent read it without ever running a
model, so `import facedeblur.config` must not pull in onnxruntime, OpenCV or onnx (defaults.py holds the
defaults the config needs)."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("onnxruntime", "cv2", "onnx")


def test_importing_the_config_loads_no_inference_stack():
    probe = ("import json, sys, facedeblur.config as c; c.load_config(None); "
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []

