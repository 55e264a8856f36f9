"""`facedeblur demo`, the README's first command: the built-in sample photo and clip, restored end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest


@pytest.mark.slow
def test_demo_restores_the_sample_photo_and_clip(tmp_path):
    out = tmp_path / "sample-output"
    result = subprocess.run([sys.executable, "-m", "facedeblur", "demo", "-o", str(out)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    photo = cv2.imread(str(out / "photo" / "sample-photo.png"))
    assert photo is not None and photo.size > 0
    manifest = json.loads((out / "clip" / "manifest.json").read_text())
    assert manifest["summary"]["tracks"] >= 1
    assert (out / "clip" / "restored.mp4").stat().st_size > 0 and (out / "clip" / "index.html").is_file()
