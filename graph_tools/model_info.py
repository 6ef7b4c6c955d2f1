"""What a model is, read off its graph: image input, layout, kind (classifier, segmenter, detector, embedding), the
output targets weigh, candidate CAM layers, classifier weights."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import contrib, quant, static
from . import graph as g
from .errors import GraphError

# Spatial size assumed for shape inference when the model leaves H and W symbolic.
PROBE_SIZE = 224

KINDS = ("classifier", "segmenter", "detector", "embedding")
# the raw heads a detector's output is read as (their decoding lives with the service's detection math)
HEADS = ("yolov8", "yolov5", "nms", "ssd")
# the (N, A, 4 + K) output made by joining a split head's boxes and scores (a name no exporter writes)
SPLIT_HEAD = "camserve::boxes_scores"
# single-stage detectors predict at these strides (P3-P5; P6 models add 64)
_STRIDES = ((8, 16, 32), (8, 16, 32, 64))
_DECLARE = ('declare it: "kind" (one of classifier, segmenter, detector, embedding), "output" (the tensor targets '
            'weigh) and, for a detector, "head" (yolov8: N x (4+K) x A, yolov5: N x A x (5+K), nms: N x D x 6, '
            'ssd: boxes N x A x 4 and scores N x A x K) in config.json, or Model(path, kind=..., output=..., '
            'head=...)')


@dataclass(frozen=True)
class Layer:
    name: str
    shape: tuple                     # the tensor's own dims: (N, C, h, w), or (N, h, w, C) where channels-last
    op: str
    layout: str = "NCHW"             # where its channel axis is: "NCHW", or "NHWC" inside the graph


@dataclass(frozen=True)
class ModelInfo:
    input_name: str
    input_shape: tuple
    layout: str                      # "NCHW" or "NHWC"
    logits: str                      # the output targets weigh: a classifier's pre-softmax scores, a segmenter's
    #                                  map, a detector's raw head, an embedding
    num_classes: int | None          # classes (a detector's K); an embedding's size
    softmax_removed: bool            # True when the graph's output was a Softmax and logits sit before it
    layers: tuple[Layer, ...] = field(default_factory=tuple)
    default_layer: str = ""
    kind: str = "classifier"         # one of KINDS
    output_shape: tuple = ()         # the shape of `logits` (the batch axis as the graph names it)
    head: str | None = None          # a detector's head layout, one of HEADS
    scales: tuple[tuple[int, int, str], ...] = ()   # a detector's (stride, anchors, branch layer), head order
    # channels-last 4-D activations (ConvNeXt's LayerNorms, tf2onnx's graphs inside): layers a caller may name,
    # explained through their (0, 3, 1, 2) transpose; never a default, a scale's branch or a tail's cut
    channels_last: tuple[Layer, ...] = ()

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

    @property
    def weights_shape(self) -> list:
        """The shape of the target weights (one tensor per image, shaped like the output): a classifier's
        (N, classes); else the output's, its sizes left open where the input's spatial size is."""
        if self.kind == "classifier":
            return ["N", self.num_classes]
        static = all(isinstance(d, int) for d in self.spatial)
        return ["N", *(d if static and isinstance(d, int) else None for d in self.output_shape[1:])]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def is_channels_last(self, name: str) -> bool:
        return any(layer.name == name for layer in self.channels_last)

    def check_layers(self, names: list[str]) -> None:
        known = set(self.layer_names()) | {layer.name for layer in self.channels_last}
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
    """A folded copy, without its weights, whose input has static spatial dims and whose shape-derived Slice and
    Reshape operands are constants, so shape inference can size every activation."""
    probe, _ = static.without_weights(model)
    g.fold_constants(probe)
    g.set_input_dims(probe, value.name, {axis: PROBE_SIZE for axis in spatial_axes(layout)}, only_symbolic=True)
    return static.make_static(probe, value.name)


def _logits(model: onnx.ModelProto, output: str | None) -> tuple[str, bool]:
    """The tensor targets weigh, and whether a final Softmax was stepped over: the named `output` as it is,
    else the first graph output, or what its Softmax reads (through Identity nodes)."""
    graph = model.graph
    if output:
        known = {o for node in graph.node for o in node.output} | {o.name for o in graph.output}
        if output not in known:
            names = ", ".join(o.name for o in graph.output)
            raise GraphError(f"no tensor {output!r} in the graph (its outputs: {names})")
        return output, False
    if not graph.output:
        raise GraphError("the graph has no outputs")
    name = graph.output[0].name
    made_by = g.producers(graph)
    node = made_by.get(name)
    while node is not None and node.op_type == "Identity":   # paddle2onnx ends in Identity(Softmax)
        node = made_by.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return node.input[0], True
    return name, False


def _anchors(spatial: tuple, strides: tuple[int, ...]) -> int | None:
    """The anchor count of a single-stage head at these strides (ceil(H/s) * ceil(W/s) summed), if H, W are known."""
    if not all(isinstance(d, int) for d in spatial):
        return None
    return sum(-(-spatial[0] // s) * -(-spatial[1] // s) for s in strides)


def _head(model: onnx.ModelProto, shape: list, spatial: tuple) -> str | None:
    """The detector head an output of this shape is, or None."""
    if any(node.op_type == "NonMaxSuppression" for node in model.graph.node):
        return "nms" if len(shape) == 3 and shape[-1] == 6 else None
    if len(shape) != 3:
        return None
    counts = {_anchors(spatial, strides) for strides in _STRIDES} - {None}
    if shape[2] in counts and isinstance(shape[1], int) and shape[1] > 4:
        return "yolov8"
    if shape[1] in counts and isinstance(shape[2], int) and shape[2] > 5:
        return "yolov5"
    return None


_PASS = ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout", "Softmax", "LogSoftmax")


def _vector_kind(model: onnx.ModelProto, name: str) -> str:
    """classifier or embedding, for an N x D output: an embedding is pooled features or a normalised vector, with no
    linear layer or 1x1-conv head after the last feature map; everything else reads as a classifier."""
    producers = g.producers(model.graph)
    node = producers.get(name)
    while node is not None and node.op_type in _PASS:
        node = producers.get(node.input[0])
    if node is None:
        return "classifier"
    if node.op_type in ("LpNormalization",) or (node.op_type == "Div" and _is_norm(producers, node.input[1])):
        return "embedding"
    if node.op_type in ("GlobalAveragePool", "ReduceMean", "GlobalMaxPool", "ReduceMax"):
        before = producers.get(node.input[0])
        while before is not None and before.op_type in ("Relu", "Clip", "HardSwish", "Sigmoid", "Mul", "Identity"):
            if before.op_type == "Mul" and "Sigmoid" not in {getattr(producers.get(i), "op_type", "") for i in
                                                             before.input}:
                break
            before = producers.get(before.input[0])
        return "classifier" if before is not None and before.op_type == "Conv" else "embedding"
    return "classifier"


def _is_norm(producers: dict, name: str) -> bool:
    """Whether `name` is an L2 norm of something (ReduceL2, or Sqrt of a sum of squares), maybe clipped."""
    node = producers.get(name)
    for _ in range(4):
        if node is None:
            return False
        if node.op_type in ("ReduceL2", "Sqrt"):
            return True
        if node.op_type not in ("Clip", "Max", "Add", "Expand", "Identity"):
            return False
        node = producers.get(node.input[0])
    return False


def _kind(model: onnx.ModelProto, logits: str, shape: list, spatial: tuple, softmax: bool,
          kind: str | None, head: str | None) -> tuple[str, str | None]:
    """The model's kind and detector head, read off its output's shape (or checked, where declared)."""
    found = f"output {logits!r} of shape {_shown(shape)}"
    if kind is not None and kind not in KINDS:
        raise GraphError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if head is not None and head not in HEADS:
        raise GraphError(f"unknown detector head {head!r}; choose one of {', '.join(HEADS)}")
    if head == "ssd" and (len(shape) != 3 or not isinstance(shape[2], int) or shape[2] < 5):
        raise GraphError(f"an ssd head's joined output is N x A x (4 + K); {found}")
    if kind in (None, "detector"):
        read = head or _head(model, shape, spatial)
        if read is not None:
            return "detector", read
        if kind == "detector":
            raise GraphError(f"{found} is not a detector head camserve reads (yolov8: N x (4+K) x A, yolov5: "
                             f"N x A x (5+K) with A anchors at strides 8/16/32, nms: N x D x 6, ssd: two outputs "
                             f"N x A x 4 and N x A x K); {_DECLARE}")
    if kind is not None:
        want = {"classifier": 2, "embedding": 2, "segmenter": 4}[kind]
        if len(shape) != want:
            raise GraphError(f"a {kind} has an output of rank {want}; {found}")
        return kind, None
    if len(shape) == 2:
        return ("classifier" if softmax else _vector_kind(model, logits)), None
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) and shape[2] * shape[3] > 1:
        return "segmenter", None
    raise GraphError(f"the model's {found} matches no model kind camserve knows (classifier N x classes, segmenter "
                     f"N x K x H x W, detector raw heads or NMS, embedding N x D); {_DECLARE}")


def _shown(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def split_head(model: onnx.ModelProto) -> tuple[str, str] | None:
    """(boxes, scores): the two graph outputs of an SSD/RetinaNet-style head, (N, A, 4) boxes and (N, A, K)
    class scores with the same A anchors; None where the graph has no such pair (or more than one)."""
    if len(model.graph.output) < 2:
        return None
    value, layout = _image_input(model)
    values = g.infer(_with_static_input(model, value, layout))
    shapes = {o.name: g.dims(values[o.name]) for o in model.graph.output if o.name in values}
    ranked = {name: shape for name, shape in shapes.items() if len(shape) == 3 and isinstance(shape[1], int)}
    pairs = [(b, c) for b, bs in ranked.items() if bs[2] == 4
             for c, cs in ranked.items() if c != b and cs[1] == bs[1] and isinstance(cs[2], int) and cs[2] >= 1]
    return pairs[0] if len(pairs) == 1 else None


def join_split_head(model: onnx.ModelProto, boxes: str, scores: str) -> onnx.ModelProto:
    """The model (changed in place) with SPLIT_HEAD = Concat(boxes, scores) on the last axis as its first output:
    one (N, A, 4 + K) tensor that a detection's target weighs, like a YOLOv5 head without objectness."""
    if any(o.name == SPLIT_HEAD for o in model.graph.output):
        return model
    model.graph.node.append(helper.make_node("Concat", [boxes, scores], [SPLIT_HEAD], axis=2,
                                             name=SPLIT_HEAD))
    model.graph.output.insert(0, helper.make_tensor_value_info(SPLIT_HEAD, TensorProto.FLOAT, None))
    return model


def explainable(model: onnx.ModelProto, kind: str | None = None, output: str | None = None,
                head: str | None = None) -> onnx.ModelProto:
    """The model as camserve explains it, changed in place: ONNX Runtime's fused contrib ops split into standard
    ones (contrib.unfuse), and a split detector head (boxes and scores apart) joined into one output where nothing
    declared says otherwise."""
    g.symbolic_unknown_dims(model)
    if quant.has_qoperator(model):   # QLinearConv & co: integer activations throughout, rewritten as QDQ
        quant.qoperator_to_qdq(model)
    contrib.unfuse(model)
    if output is None and kind in (None, "detector") and head in (None, "ssd"):
        pair = split_head(model)
        if pair is not None:
            return join_split_head(model, *pair)
        if head == "ssd":
            outputs = ", ".join(f"{o.name!r}" for o in model.graph.output)
            raise GraphError(f"an ssd head has two outputs, boxes (N, A, 4) and scores (N, A, K); this graph's "
                             f"outputs are {outputs}")
    return model


def inspect(source, kind: str | None = None, output: str | None = None, head: str | None = None) -> ModelInfo:
    """Describe the model: its image input, kind, the output targets weigh and every candidate target layer.

    kind, output and head override what the graph is read as (config.json's "kind", "output", "head"). A split
    (SSD/RetinaNet-style) head is read through its joined output SPLIT_HEAD (see `explainable`).
    """
    model = load(source)
    if isinstance(source, onnx.ModelProto) and (contrib.contrib_ops(model) or quant.has_qoperator(model) or any(
            d.HasField("dim_value") and d.dim_value <= 0 for i in g.real_inputs(model.graph)
            for d in i.type.tensor_type.shape.dim) or (
            not any(o.name == SPLIT_HEAD for o in model.graph.output) and output is None
            and kind in (None, "detector") and split_head(model) is not None)):
        model = copy.deepcopy(model)   # a caller's proto is not changed
    model = explainable(model, kind, output, head)
    if any(o.name == SPLIT_HEAD for o in model.graph.output) and output is None:
        output, head = SPLIT_HEAD, "ssd"
    value, layout = _image_input(model)
    logits, removed = _logits(model, output)
    values = g.infer(_with_static_input(model, value, layout))
    logit_dims = g.dims(values[logits]) if logits in values else []
    if not logit_dims:
        raise GraphError(f"the shape of output {logits!r} is unknown even after shape inference")
    spatial = tuple(PROBE_SIZE if isinstance(d, str) or d is None else d
                    for d in (g.dims(value)[a] for a in spatial_axes(layout)))
    kind, head = _kind(model, logits, logit_dims, spatial, removed, kind, head)
    if kind == "detector":
        extent = {"yolov8": logit_dims[1] - 4 if isinstance(logit_dims[1], int) else None,
                  "yolov5": logit_dims[2] - 5 if isinstance(logit_dims[2], int) else None, "nms": None,
                  "ssd": logit_dims[2] - 4}[head]
        num_classes = extent
    elif kind == "segmenter":
        num_classes = logit_dims[1] if isinstance(logit_dims[1], int) else None
    else:
        num_classes = logit_dims[-1] if isinstance(logit_dims[-1], int) else None
    needed = g.ancestors(model.graph, [logits])
    channels_last = {name for name, at in tensor_layouts(model, value.name, layout).items() if at == "NHWC"}
    layers, last = [], []
    for node in model.graph.node:
        for out in node.output:
            info = values.get(out)
            if out not in needed or out == logits or info is None or node.op_type in ("Constant", "Shape"):
                continue
            if info.type.tensor_type.elem_type != TensorProto.FLOAT:
                continue
            shape = g.dims(info)
            hw = shape[1:3] if out in channels_last else shape[2:]
            if len(shape) != 4 or not all(isinstance(d, int) for d in hw) or hw[0] * hw[1] <= 1:
                continue   # a 1x1 pooled tensor has no map
            if out in channels_last:   # not (N, C, h, w): listed apart, never a default
                last.append(Layer(out, tuple(shape), node.op_type, "NHWC"))
            else:
                layers.append(Layer(out, tuple(shape), node.op_type))
    if not layers:
        raise GraphError(f"the graph has no 4-D float activations with spatial size > 1 before its output {logits!r}; "
                         "CAM methods need a convolutional feature map")
    # an SSD head's anchors are several per cell and its scales' order is the exporter's: no per-scale layers
    scales = _scales(model, layers, spatial) if kind == "detector" and head != "ssd" else ()
    default = _default_layer(kind, layers, num_classes, scales)
    if kind == "detector" and head == "ssd":
        default = _dominator(model, layers, logits) or default
    return ModelInfo(value.name, tuple(g.dims(value)), layout, logits, num_classes, removed,
                     tuple(layers), default, kind, tuple(logit_dims), head, scales, tuple(last))


# ops whose 4-D output is NCHW by the ONNX spec, whatever their input's layout was
_NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
             "BatchNormalization", "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth", "MaxUnpool"}
# ops whose output has their 4-D operands' layout (element-wise, or along the last axis: LayerNorm, a Linear layer)
_SAME_LAYOUT = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid", "HardSwish",
                "Tanh", "Softplus", "Mish", "Erf", "Clip", "Identity", "Dropout", "Cast", "Neg", "Abs", "Sqrt",
                "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "LayerNormalization", "MatMul",
                "Resize", "Upsample", "Pad"}
_TO_NHWC, _TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def tensor_layouts(model: onnx.ModelProto, image: str, layout: str) -> dict[str, str]:
    """Where each 4-D activation's channel axis is, followed from the image input: "NCHW" or "NHWC" (a tensor
    permuted channels-last, as ConvNeXt's LayerNorms and tf2onnx graphs do inside), absent where it cannot be told
    (after a Reshape, say)."""
    at = {image: layout}
    for node in model.graph.node:
        found = None
        if node.op_type in _NCHW_OPS:
            found = "NCHW"
        elif node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            source = at.get(node.input[0])
            if source == "NCHW" and perm == _TO_NHWC or source == "NHWC" and perm == _TO_NCHW:
                found = "NHWC" if source == "NCHW" else "NCHW"
            elif source is not None and perm == [0, 1, 2, 3]:
                found = source
        elif node.op_type in _SAME_LAYOUT:
            known = {at[i] for i in node.input if i in at}
            if len(known) == 1:
                found = known.pop()
        if found is not None:
            for out in node.output[:1]:
                at[out] = found
    return at


def _default_layer(kind: str, layers: list[Layer], num_classes: int | None, scales: tuple) -> str:
    """The layer a map is taken at when the caller names none.

    A classifier's or embedding's: the last feature map. A segmenter's: the last of its coarsest feature maps
    (the encoder's bottleneck, or an FCN's dilated backbone output) that is not a per-class score map. A
    detector's: the branch point of its coarsest head scale (a detection target takes its own scale's).
    """
    if kind == "detector" and scales:
        return scales[-1][2]
    if kind == "segmenter":
        area = min(layer.shape[2] * layer.shape[3] for layer in layers)
        coarse = [layer for layer in layers if layer.shape[2] * layer.shape[3] == area]
        features = [layer for layer in coarse if layer.shape[1] != num_classes] or coarse
        return features[-1].name
    return layers[-1].name


def _scales(model: onnx.ModelProto, layers: list[Layer], spatial: tuple) -> tuple[tuple[int, int, str], ...]:
    """(stride, anchors, branch layer) of each head scale of a single-stage detector, finest first (the order the
    anchors axis of YOLO exports follows). The branch layer is the feature map every path to that scale's
    predictions (box and class branches) passes through, nearest them: the neck output both branches read (where
    ODAM takes a detection's map). Scales with no such layer are left out."""
    graph = model.graph
    found = []
    for strides in _STRIDES:
        for stride in strides:
            size = (-(-spatial[0] // stride), -(-spatial[1] // stride))
            at = [layer for layer in layers if tuple(layer.shape[2:]) == size]
            if not at:
                break
            names = {layer.name for layer in at}
            read = set()             # layers at this size that a later one at this size depends on
            for layer in at:
                read |= (g.ancestors(graph, [layer.name]) - {layer.name}) & names
            # the scale's predictions before they are flattened into anchors (box and class branches apart)
            ends = [layer.name for layer in at if layer.name not in read]
            for layer in reversed(at):
                if layer.name not in ends and all(_dominates(graph, layer.name, end) for end in ends):
                    found.append((stride, size[0] * size[1], layer.name))
                    break
        if len(found) == len(strides):
            break
        found = []
    return tuple(found)


def _dominator(model: onnx.ModelProto, layers: list[Layer], output: str) -> str | None:
    """The latest layer every path from the image to `output` passes through: for a multi-scale head read as one
    output, the feature map all its scales branch from, so every detection's evidence is in it."""
    for layer in reversed(layers):
        if _dominates(model.graph, layer.name, output):
            return layer.name
    return None


def _dominates(graph: onnx.GraphProto, via: str, target: str) -> bool:
    """Whether every path from the image input to `target` passes through tensor `via`."""
    reached = {i.name for i in g.real_inputs(graph)}
    for node in graph.node:   # topological order
        if any(i in reached for i in node.input if i != via):
            reached.update(node.output)
            if target in reached:
                return False
    return True


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
