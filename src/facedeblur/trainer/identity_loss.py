"""An identity-preserving loss: the shipped SFace recogniser, made differentiable in PyTorch.

The loss is 1 - cosine(SFace(restored), SFace(clean)) on the faces warped from our crop template to
SFace's 112 px layout. SFace is only ever a training signal here; identity is judged by a different
network (dlib's ResNet, in `evaluate`), so the model cannot learn to please its own judge.

Why a small ONNX interpreter instead of onnx2torch: onnx2torch imports torchvision at load time, and the
torchvision wheel does not load beside this project's CPU torch. SFace uses ten plain operator types
(Conv, BatchNormalization, PRelu, Gemm, ...), each a line of torch.nn.functional below, and the weights
come straight from the shipped file, so the network is exactly the one the pipeline runs.
"""
from __future__ import annotations

import cv2
import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from ..defaults import SFACE_FILE, bundled_model_path
from ..onnx_dequantize import bundled_float_model
from ..pipeline.align import template_points
from ..pipeline.identity import SFACE_TEMPLATE_112


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


class OnnxInterpreter(nn.Module):
    """Runs a float ONNX graph of the operator types SFace uses, with its weights as frozen buffers.

    Nodes whose inputs are all constants (the Reshapes that shape the dequantised conv weights) are
    folded once at load time."""

    SUPPORTED = {"Conv", "BatchNormalization", "PRelu", "Sub", "Mul", "Add", "Dropout", "Flatten", "Gemm"}

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        constants = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
        self.steps: list[tuple[str, list[str], list[str], dict]] = []
        for node in model.graph.node:
            if node.op_type == "Constant":
                constants[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"]).copy()
            elif node.op_type == "Reshape" and all(name in constants for name in node.input):
                constants[node.output[0]] = constants[node.input[0]].reshape(constants[node.input[1]].astype(np.int64))
            elif node.op_type in self.SUPPORTED:
                self.steps.append((node.op_type, list(node.input), list(node.output), _attributes(node)))
            else:
                raise ValueError(f"identity model: unsupported ONNX operator {node.op_type}")
        used = {name for _, inputs, _, _ in self.steps for name in inputs}
        self.buffer_names = {}
        for index, name in enumerate(sorted(used & constants.keys())):
            self.register_buffer(f"w{index}", torch.from_numpy(np.asarray(constants[name], np.float32)))
            self.buffer_names[name] = f"w{index}"
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x}
        value = lambda name: values[name] if name in values else getattr(self, self.buffer_names[name])
        for op, inputs, outputs, attrs in self.steps:
            args = [value(name) for name in inputs if name]
            values[outputs[0]] = self._run(op, args, attrs)
        return values[self.output_name]

    @staticmethod
    def _run(op: str, args: list[torch.Tensor], attrs: dict) -> torch.Tensor:
        if op == "Conv":
            top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
            x = args[0] if (top, left) == (bottom, right) else F.pad(args[0], (left, right - left, top, bottom - top))
            return F.conv2d(x, args[1], args[2] if len(args) > 2 else None, stride=attrs.get("strides", [1, 1]),
                            padding=(top, left), dilation=attrs.get("dilations", [1, 1]), groups=attrs.get("group", 1))
        if op == "BatchNormalization":
            return F.batch_norm(args[0], args[3], args[4], args[1], args[2], training=False,
                                eps=attrs.get("epsilon", 1e-5))
        if op == "PRelu":
            slope = args[1].reshape(1, -1, 1, 1) if args[0].dim() == 4 and args[1].numel() == args[0].shape[1] else args[1]
            return torch.where(args[0] >= 0, args[0], args[0] * slope)
        if op == "Sub":
            return args[0] - args[1]
        if op == "Mul":
            return args[0] * args[1]
        if op == "Add":
            return args[0] + args[1]
        if op == "Dropout":
            return args[0]
        if op == "Flatten":
            return torch.flatten(args[0], attrs.get("axis", 1))
        # Gemm
        a = args[0].transpose(-1, -2) if attrs.get("transA", 0) else args[0]
        b = args[1].transpose(-1, -2) if attrs.get("transB", 0) else args[1]
        out = attrs.get("alpha", 1.0) * (a @ b)
        return out + attrs.get("beta", 1.0) * args[2] if len(args) > 2 else out


class IdentityLoss(nn.Module):
    """1 - cosine similarity of SFace embeddings, for RGB face crops in [0, 1] aligned to our template."""

    def __init__(self, crop_size: int = 128):
        super().__init__()
        self.sface = OnnxInterpreter(onnx.load_from_string(bundled_float_model(bundled_model_path(SFACE_FILE))))
        self.sface.eval().requires_grad_(False)
        matrix, _ = cv2.estimateAffinePartial2D(template_points(crop_size), SFACE_TEMPLATE_112, method=cv2.LMEDS)
        # affine_grid wants the inverse map (output -> input) in normalised [-1, 1] coordinates
        inverse = cv2.invertAffineTransform(matrix)
        to_pixels_out = np.array([[56.0, 0, 55.5], [0, 56.0, 55.5], [0, 0, 1]])       # 112 px, align_corners=False
        half = crop_size / 2
        from_pixels_in = np.linalg.inv(np.array([[half, 0, half - 0.5], [0, half, half - 0.5], [0, 0, 1]]))
        theta = from_pixels_in @ np.vstack([inverse, [0, 0, 1]]) @ to_pixels_out
        self.register_buffer("theta", torch.tensor(theta[:2], dtype=torch.float32))

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta.expand(len(faces), 2, 3), [len(faces), 3, 112, 112], align_corners=False)
        warped = F.grid_sample(faces.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.normalize(self.sface(warped * 255.0), dim=1)

    def forward(self, restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.embed(clean)
        return (1 - (self.embed(restored) * target).sum(dim=1)).mean()
