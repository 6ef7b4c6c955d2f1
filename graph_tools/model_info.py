"""What a model is, read off its graph: image input, layout, logits, candidate CAM layers, classifier weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from . import graph as g
from .errors import GraphError

# Spatial size assumed for shape inference when the model leaves H and W symbolic.
PROBE_SIZE = 224


@dataclass(frozen=True)
class Layer:
    name: str
    shape: tuple
    op: str


@dataclass(frozen=True)
class ModelInfo:
    input_name: str
    input_shape: tuple
    layout: str                      # "NCHW" or "NHWC"
    logits: str                      # tensor holding pre-softmax scores
    num_classes: int | None
    softmax_removed: bool            # True when the graph's output was a Softmax and logits sit before it
    layers: tuple[Layer, ...] = field(default_factory=tuple)
    default_layer: str = ""

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return spatial_axes(self.layout)

    @property
    def spatial(self) -> tuple:
        """(H, W) of the image input: ints, or strings where the model leaves them symbolic."""
        return tuple(self.input_shape[a] for a in self.spatial_axes)

    @property
    def channels(self) -> int | str | None:
        return self.input_shape[1 if self.layout == "NCHW" else 3]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def check_layers(self, names: list[str]) -> None:
        known = set(self.layer_names())
        for name in names:
            if name not in known:
                shown = ", ".join(self.layer_names()[-12:])
                raise GraphError(f"unknown layer {name!r}; candidates ({len(known)}, last shown): {shown}")


def spatial_axes(layout: str) -> tuple[int, int]:
    """Axes of height and width in an image tensor of this layout."""
    return (2, 3) if layout == "NCHW" else (1, 2)


def load(source: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_from_string(bytes(source))
    return onnx.load(str(source))


def _image_input(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, str]:
    inputs = g.real_inputs(model.graph)
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise GraphError(f"expected one image input, the graph has {len(inputs)}: {names}")
    value = inputs[0]
    if value.type.tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
        raise GraphError(f"input {value.name!r} is not a float tensor, so not an image input")
    shape = g.dims(value)
    if len(shape) != 4:
        raise GraphError(f"input {value.name!r} has rank {len(shape)}; an image input is 4-D (N,C,H,W)")
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return value, "NHWC"
    return value, "NCHW"


def _with_static_input(model: onnx.ModelProto, value: onnx.ValueInfoProto, layout: str) -> onnx.ModelProto:
    """A folded copy whose input has static spatial dims, so shape inference can size every activation."""
    probe = g.fold_constants(g.copy(model))
    g.set_input_dims(probe, value.name, {axis: PROBE_SIZE for axis in spatial_axes(layout)}, only_symbolic=True)
    return probe


def _logits(model: onnx.ModelProto) -> tuple[str, bool]:
    graph = model.graph
    if not graph.output:
        raise GraphError("the graph has no outputs")
    name = graph.output[0].name
    node = g.producers(graph).get(name)
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return node.input[0], True
    return name, False


def inspect(source) -> ModelInfo:
    """Describe the model: its image input, logits tensor and every candidate target layer."""
    model = load(source)
    value, layout = _image_input(model)
    logits, removed = _logits(model)
    values = g.infer(_with_static_input(model, value, layout))
    logit_dims = g.dims(values[logits]) if logits in values else []
    num_classes = logit_dims[-1] if logit_dims and isinstance(logit_dims[-1], int) else None
    needed = g.ancestors(model.graph, [logits])
    layers = []
    for node in model.graph.node:
        for out in node.output:
            info = values.get(out)
            if out not in needed or info is None:
                continue
            if info.type.tensor_type.elem_type != TensorProto.FLOAT:
                continue
            shape = g.dims(info)
            if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
                continue
            if shape[2] * shape[3] > 1 and node.op_type not in ("Constant", "Shape"):
                layers.append(Layer(out, tuple(shape), node.op_type))
    if not layers:
        raise GraphError("the graph has no 4-D float activations with spatial size > 1 before its logits; "
                         "CAM methods need a convolutional feature map")
    return ModelInfo(value.name, tuple(g.dims(value)), layout, logits, num_classes, removed,
                     tuple(layers), layers[-1].name)


def linear_head(model: onnx.ModelProto, layer: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(W (classes, K), b (classes,), output tensor) when `layer` feeds global average pooling, then
    only reshapes, then one linear layer (Gemm, or MatMul + Add) with constant weights; else None."""
    graph = model.graph
    users = g.consumers(graph)
    name, pooled = layer, False
    for _ in range(6):
        nexts = users.get(name, [])
        if len(nexts) != 1:
            return None
        node = nexts[0]
        if node.op_type in ("GlobalAveragePool", "ReduceMean") and not pooled:
            pooled = True
        elif node.op_type in ("Gemm", "MatMul") and pooled:
            return linear_layer(graph, node, users)
        elif node.op_type not in ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout"):
            return None
        name = node.output[0]
    return None


def linear_layer(graph: onnx.GraphProto, node: onnx.NodeProto,
                 users: dict | None = None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(W (out, in), b (out,), output tensor) of a Gemm, or a MatMul and the Add of its bias, with
    constant weights: y = x W^T + b. None for anything else."""
    if node.op_type not in ("Gemm", "MatMul"):
        return None
    users = g.consumers(graph) if users is None else users
    weight = g.constant_value(graph, node.input[1])
    if weight is None or weight.ndim != 2:
        return None
    if node.op_type == "MatMul":
        weight, out = weight.T, node.output[0]
        after = users.get(out, [])
        bias = None
        if len(after) == 1 and after[0].op_type == "Add":
            other = [i for i in after[0].input if i != out]
            bias = g.constant_value(graph, other[0]) if len(other) == 1 else None
            if bias is not None:
                out = after[0].output[0]
        bias = np.zeros(len(weight), np.float32) if bias is None else bias
        return weight.astype(np.float32), bias.reshape(-1).astype(np.float32), out
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0):
        return None
    weight = weight if attrs.get("transB", 0) else weight.T
    bias = g.constant_value(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(len(weight))
    if bias is None or bias.size not in (1, len(weight)):
        return None
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    bias = np.broadcast_to(bias.reshape(-1), (len(weight),)) * beta
    return (alpha * weight).astype(np.float32), bias.astype(np.float32), node.output[0]


def classifier_weights(model: onnx.ModelProto, layer: str) -> np.ndarray:
    """The (classes, K) weights of a GAP -> (Flatten) -> Gemm/MatMul head fed by `layer` (for CAM)."""
    head = linear_head(model, layer)
    if head is None:
        raise GraphError(f"CAM needs layer {layer!r} to feed global average pooling and a linear classifier; "
                         "this graph has something else there (use gradcam)")
    return head[0]
