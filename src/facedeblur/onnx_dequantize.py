"""Expand the block-quantised int8 weights of the bundled YuNet/SFace files to float32, in memory.

onnxruntime's CPU kernel rejects some of their per-tensor DequantizeLinear nodes that carry a block_size
attribute, and fp32 weights are also faster; the expansion is exact ((q - zero_point) * scale).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


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


@lru_cache(maxsize=4)
def float_model_bytes(path: str | Path) -> bytes:
    model = onnx.load(str(path))
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
    return model.SerializeToString()
