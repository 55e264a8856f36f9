"""Expand the block-quantised int8 weights of the bundled YuNet/SFace files to float32.

onnxruntime's CPU kernel rejects some of their per-tensor DequantizeLinear nodes that carry a block_size
attribute, and fp32 weights are also faster; the expansion is exact ((q - zero_point) * scale).

The expanded models are kept in $XDG_CACHE_HOME/facedeblur (the systemd units point it at the state
folder), named by the source file's hash: importing the `onnx` package to expand them costs about a second
of CPU, which every `process` and `restore` command would pay again. Where that folder cannot be written the
expansion runs in memory every time.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .image_files import write_bytes_atomic

log = logging.getLogger(__name__)

# Part of every cache entry's name: change it whenever the expansion below changes what it produces.
EXPANSION_VERSION = "1"


def _dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
                block_size: int) -> np.ndarray:
    q = quantized.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.size == 1:
        return (q - zp.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block_size and scale.ndim == q.ndim:
        scale = np.repeat(scale, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        return (q - zp) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zp.reshape(shape)) * scale.reshape(shape)


def model_cache_dir() -> Path | None:
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facedeblur" / "models"
    except RuntimeError:  # no home directory to put it in
        return None


@lru_cache(maxsize=4)
def bundled_float_model(path: str | Path, dynamic_image_size: bool = False) -> bytes:
    """The model of `path` with its quantised weights expanded to float32, from the cache when it holds it. With
    `dynamic_image_size` the first input's height and width are declared symbolic (YuNet: see detect.py)."""
    source = Path(path).read_bytes()
    key = hashlib.sha256(source + f"|{EXPANSION_VERSION}|{dynamic_image_size}".encode()).hexdigest()[:24]
    folder = model_cache_dir()
    stem = f"{Path(path).stem}-{key}-"
    for entry in sorted(folder.glob(f"{stem}*.onnx")) if folder is not None and folder.is_dir() else ():
        data = _read_regular_file(entry)
        # the name ends with the content's own hash: a damaged or foreign entry is ignored and replaced
        if data is not None and hashlib.sha256(data).hexdigest()[:24] == entry.stem.removeprefix(stem):
            return data
    expanded = _expand(source, dynamic_image_size)
    if folder is None:
        return expanded
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / f"{stem}{hashlib.sha256(expanded).hexdigest()[:24]}.onnx", expanded)
    except OSError as exc:
        log.debug("model cache %s not writable (%s): expanding in memory each run", folder, exc)
    return expanded


def _read_regular_file(path: Path) -> bytes | None:
    try:
        if not path.is_file() or path.is_symlink():
            return None
        return path.read_bytes()
    except OSError:
        return None


def _expand(source: bytes, dynamic_image_size: bool) -> bytes:
    import onnx

    model = _expanded(onnx.load_from_string(source))
    if dynamic_image_size:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    return model.SerializeToString()


def _expanded(model):
    """`model` (an onnx.ModelProto) with every constant DequantizeLinear replaced by its float32 result."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    replaced, consumed = [], set()
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or not all(name in initializers for name in node.input if name):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        arrays = [numpy_helper.to_array(initializers[name]) if name else None for name in node.input]
        while len(arrays) < 3:
            arrays.append(None)
        value = _dequantize(arrays[0], arrays[1], arrays[2], attrs.get("axis", 1), attrs.get("block_size", 0))
        replaced.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        consumed.update(name for name in node.input if name)
        graph.node.remove(node)
    still_used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name not in consumed or init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep + replaced)
    initializer_names = {init.name for init in graph.initializer}
    # SFace's file also lists its raw weights as graph inputs that no node reads; drop them too.
    inputs = [i for i in graph.input if i.name not in initializer_names and i.name in still_used]
    del graph.input[:]
    graph.input.extend(inputs)
    return model
