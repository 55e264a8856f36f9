"""Fixtures shared by several test modules: real images, the shipped models, and models of known behaviour.

Session-scoped where loading is the cost (ONNX sessions take about a second each); every fixture is real:
scikit-image's astronaut photo, the models that ship in the package, ONNX files run through onnxruntime.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest

# The dependencies whose releases have changed behaviour under us. CI installs the newest allowed versions, so
# every run ends with the ones it had (at the end, where a quiet run's summary stands).
REPORTED_DEPENDENCIES = ("av", "onnxruntime", "opencv-python-headless", "numpy", "torch", "celery", "starlette")


def pytest_terminal_summary(terminalreporter) -> None:
    found = []
    for name in REPORTED_DEPENDENCIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    terminalreporter.write_line("dependencies: " + ", ".join(found))


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut (512x512, one sharp face about 90 px wide), as OpenCV reads images (BGR)."""
    skimage_data = pytest.importorskip("skimage.data")
    image = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    image.flags.writeable = False   # shared by many tests: none may change it
    return image


@pytest.fixture(scope="session")
def shipped_pipeline_models():
    """The detector, restorer and identity model users get (`load_models` with default settings)."""
    from facedeblur.config import PipelineSettings
    from facedeblur.footage.process import load_models
    return load_models(PipelineSettings())


@pytest.fixture(scope="session")
def unchanged_model_path(tmp_path_factory) -> Path:
    """A real facedeblur ONNX model whose output is its input: what the pipeline alone does to a face."""
    from footage_support import build_sharpening_model
    return build_sharpening_model(tmp_path_factory.mktemp("models") / "unchanged.onnx", amount=0.0)


@pytest.fixture(scope="session")
def blurring_model_path(tmp_path_factory) -> Path:
    """A real facedeblur ONNX model that makes every face worse (a 3x3 blur): what a bad training run ships."""
    from footage_support import build_sharpening_model
    return build_sharpening_model(tmp_path_factory.mktemp("models") / "blurring.onnx", amount=-0.2)


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    yield
    import sys
    support = sys.modules.get("daemon_support")
    if support is not None:
        support.kill_leftover_daemons()
