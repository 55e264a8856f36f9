"""Export a checkpoint to ONNX (dynamic batch, height, width) with metadata, then check parity with PyTorch."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import __version__
from ..errors import FacedeblurError
from ..onnx_session import create_session
from ..pipeline.align import FACE_TEMPLATE
from ..pipeline.restore import FORMAT_MARKER
from .arch import build_model, exported_weights, onnx_model_record

PARITY_TOLERANCE = 1e-3


def load_checkpoint_model(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A model and its bookkeeping from a training checkpoint (.pt) or from an exported model (.onnx), whose
    initialisers keep the PyTorch names and whose metadata keeps the configuration and the training record:
    re-exporting an .onnx gives the same weights through the current graph code."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FacedeblurError(f"{checkpoint_path}: not found; pass a training checkpoint (.pt) or an exported .onnx")
    if checkpoint_path.suffix == ".onnx":
        return _model_from_onnx(checkpoint_path)
    checkpoint = torch.load(str(checkpoint_path), map_location="cpu", weights_only=False)
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(exported_weights(checkpoint))
    model.eval()
    return model, checkpoint


def _model_from_onnx(path: Path) -> tuple[torch.nn.Module, dict]:
    weights, bookkeeping = onnx_model_record(onnx.load(str(path)))
    if bookkeeping.pop("format") != FORMAT_MARKER or not bookkeeping["model_config"]:
        raise FacedeblurError(f"{path} is not an exported facedeblur restorer (no '{FORMAT_MARKER}' metadata with "
                              "a model_config); pass a model written by 'facedeblur train export'")
    model = build_model(bookkeeping["model_config"])
    state = model.state_dict()
    absent = [name for name in state if name not in weights]
    if absent:
        raise FacedeblurError(f"{path} lacks {len(absent)} of the model's weights (first: {absent[0]}); re-export it "
                              "from its training checkpoint instead")
    model.load_state_dict({name: weights[name] for name in state})
    model.eval()
    return model, bookkeeping


def export_onnx(model: torch.nn.Module, output_path: str | Path, metadata: dict, crop_size: int,
                opset: int = 17) -> float:
    """Write the ONNX file atomically; returns the max abs difference PyTorch vs onnxruntime."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    example = torch.rand(2, 3, crop_size, crop_size)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".part", dir=output_path.parent)
    os.close(fd)
    try:
        torch.onnx.export(
            model, (example,), tmp, input_names=["degraded"], output_names=["restored"],
            dynamic_axes={"degraded": {0: "batch", 2: "height", 3: "width"},
                          "restored": {0: "batch", 2: "height", 3: "width"}},
            opset_version=opset, dynamo=False,
        )
        proto = onnx.load(tmp)
        full_meta = {"format": FORMAT_MARKER, "crop_size": str(crop_size),
                     "template": json.dumps(np.asarray(FACE_TEMPLATE).round(4).tolist()),
                     "facedeblur_version": __version__}
        full_meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
        del proto.metadata_props[:]
        for key, value in full_meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        difference = parity_check(model, tmp, crop_size)
        if difference >= PARITY_TOLERANCE:
            raise FacedeblurError(f"ONNX parity check failed: max abs difference {difference:.2e} >= {PARITY_TOLERANCE}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, output_path)
        return difference
    finally:
        Path(tmp).unlink(missing_ok=True)


def parity_check(model: torch.nn.Module, onnx_path: str | Path, crop_size: int, seed: int = 0) -> float:
    """Max abs difference on random inputs of two sizes and batch sizes (proves the dynamic axes work)."""
    generator = torch.Generator().manual_seed(seed)
    session = create_session(onnx_path, provider="cpu")
    worst = 0.0
    for batch, height, width in ((1, crop_size, crop_size), (3, crop_size + 32, crop_size - 32)):
        x = torch.rand(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"degraded": x.numpy()})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
    return worst


def export_checkpoint(checkpoint_path: str | Path, output_path: str | Path, name: str = "facedeblur-default",
                      version: str | None = None) -> float:
    model, checkpoint = load_checkpoint_model(checkpoint_path)
    metadata = {
        "name": name,
        "version": version or checkpoint.get("version", __version__),
        "model_config": checkpoint["model_config"],
        "training": checkpoint.get("training_summary", {}),
        "metrics": checkpoint.get("metrics", {}),
        "training_data": checkpoint.get("training_data", "unknown"),
    }
    return export_onnx(model, output_path, metadata, crop_size=int(checkpoint.get("crop_size", 128)))
