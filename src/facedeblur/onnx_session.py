"""Creating onnxruntime sessions: the GPU when the installed onnxruntime has CUDA, else the CPU."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .defaults import PROVIDER_CHOICES  # noqa: F401 - the device names users give, defined without onnxruntime
from .errors import FacedeblurError

try:
    import onnxruntime as ort
except ImportError:  # it comes from the [cpu] or [gpu] extra (pyproject.toml), never from both
    raise FacedeblurError("onnxruntime is not installed: pip install 'facedeblur[cpu]', or 'facedeblur[gpu]' on an "
                          "NVIDIA server") from None

log = logging.getLogger(__name__)


def _installed_onnxruntimes() -> list[str]:
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


if len(_installed_onnxruntimes()) > 1:  # both write onnxruntime/: which one runs depends on install order
    log.warning("both %s are installed; keep one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                "'facedeblur[gpu]' (or [cpu])", " and ".join(_installed_onnxruntimes()))


def resolve_providers(provider: str = "auto") -> list[str]:
    """Map a user setting to onnxruntime providers, CUDA first with the CPU as fallback."""
    available = ort.get_available_providers()
    if provider not in PROVIDER_CHOICES:
        raise FacedeblurError(f"unknown provider {provider!r}: use one of {', '.join(PROVIDER_CHOICES)}")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "cuda":
        log.warning("CUDA requested but this onnxruntime has no CUDA provider (install onnxruntime-gpu); using the CPU")
    return ["CPUExecutionProvider"]


def create_session(model: str | Path | bytes, provider: str = "auto", threads: int = 0) -> ort.InferenceSession:
    """Open an ONNX model; `threads` 0 lets onnxruntime use every core."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the bundled int8 detector logs harmless unused-initializer warnings
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or int(os.environ.get("FACEDEBLUR_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=resolve_providers(provider))
    except Exception as exc:  # onnxruntime raises several unrelated types for unreadable models
        name = "model bytes" if isinstance(model, bytes) else str(model)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FacedeblurError(f"cannot load ONNX model {name}: {first_line[:200]}; pass a valid facedeblur .onnx file") from exc
    log.debug("onnxruntime providers for %s: %s", getattr(model, "name", "model"), session.get_providers())
    return session
