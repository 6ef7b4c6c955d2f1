"""Mask-injection graphs: the network after a layer (or the whole network) run on a batch of perturbed copies.

Three kinds, each one graph whose batch is N images x M masks, so a perturbation method costs a
few runs instead of thousands of forward passes:

* `channel_tail`: the tail after `layer` on A*m + fill*(1-m), one K-vector m per copy
  (Ablation-CAM, FD-CAM channel switching).
* `mosaic_tail`: the tail on copies holding A's feature vector at one position, spread by a weight
  row over the map (Recipro-CAM, plain and 3x3 Gaussian).
* `masked_inputs`: the whole network on x*m + baseline*(1-m), where the masks m are built in the graph
  from low-resolution maps (upsampled by interpolation matrices fed at run time, optionally min-max
  normalised per map, scaled and shifted by noise): Score-CAM and its variants, Group-CAM, RISE.

When the layer feeds nothing but a global average pool, the tail graphs inject at the pooled tensor
instead (masks constant over space commute with the pool; a mosaic pools to its centre vector
times the mean of its weight row), so the tail runs on K-vectors, not K x h x w maps. When only
the seeded score is needed and the logits come from a Gemm, that Gemm is replaced by a dot
product with class_weights @ W, so a 1000-class head costs K multiply-adds per copy.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import graph as g
from .errors import GraphError
from .gradients import CLASS_WEIGHTS
from .model_info import ModelInfo, inspect, linear_head, linear_layer

_NS = "camserve::"   # every name a rewrite adds: no exported model's tensor can collide with one
MASKS, FILL = _NS + "masks", _NS + "fill"
POSITIONS, SPREAD = _NS + "positions", _NS + "spread"
MAPS, ROWS, COLS, EPS, SCALE, NOISE, BASELINE = (_NS + n for n in ("maps", "rows_interp", "cols_interp_t", "eps",
                                                                  "scale", "noise", "baseline"))
SCORES, LOGITS = _NS + "scores", _NS + "logits"
_P = _NS + "inject::"
_POOLS = ("GlobalAveragePool", "ReduceMean")
_BIG = np.iinfo(np.int64).max


class _Nodes:
    """Appends opset-13 nodes to a list under one prefix; every helper returns its output name."""

    def __init__(self, model: onnx.ModelProto, prefix: str):
        self.model, self.prefix, self.nodes, self.count = model, prefix, [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def op(self, op_type: str, inputs: list[str], hint: str = "", out: str | None = None, **attrs) -> str:
        out = out or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, value, dtype=np.int64) -> str:
        out = self.name("const")
        self.nodes.append(g.constant_node(out, np.asarray(value, dtype)))
        return out

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(axes)])

    def shape_from(self, x: str, start: int, end: int | None = None) -> str:
        stop = self.const([_BIG if end is None else end])
        return self.op("Slice", [self.op("Shape", [x]), self.const([start]), stop])

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        out = self.name(op.lower())
        self.nodes += g.reduce_node(op, self.model, x, out, axes, keepdims)
        return out

    def flat_batch(self, x: str, like: str, like_from: int = 1) -> str:
        """x (A, B, ...) reshaped to (A*B, shape(like)[like_from:])."""
        return self.op("Reshape", [x, self.op("Concat", [self.const([-1]), self.shape_from(like, like_from)], axis=0)])

    def per_image(self, x: str, image: str) -> str:
        """x (N*M, ...) reshaped to (N, M, ...) with N = shape(image)[0]."""
        n = self.shape_from(image, 0, 1)
        return self.op("Reshape", [x, self.op("Concat", [n, self.const([-1]), self.shape_from(x, 1)], axis=0)])


_RESERVED = {MASKS, FILL, POSITIONS, SPREAD, MAPS, ROWS, COLS, EPS, SCALE, NOISE, BASELINE, SCORES, LOGITS,
             CLASS_WEIGHTS}


def _prepared(model: onnx.ModelProto, info: ModelInfo) -> tuple[onnx.ModelProto, str]:
    """A copy to rewrite (opset >= 13) and the name its logits go by there."""
    result = g.copy(model)
    if g.opset(result) < 13:  # the injected nodes use opset-13 Unsqueeze/Slice forms
        result = g.upgrade(result, 13)
        if g.opset(result) < 13:
            raise GraphError(f"opset {g.opset(model)} could not be converted to 13, which mask graphs need")
    graph = result.graph
    logits = info.logits
    if logits in _RESERVED:  # "logits" is a common output name: keep it free for ours
        g.rename(graph, logits, logits + "::camserve::model")
        logits += "::camserve::model"
    g.check_free(graph, _RESERVED, "mask")
    return result, logits


def pooled_by(model: onnx.ModelProto, layer: str) -> onnx.NodeProto | None:
    """The global average pool that is the only reader of `layer`, if it is one (spatial axes 2, 3)."""
    readers = g.consumers(model.graph).get(layer, [])
    if len(readers) != 1 or readers[0].op_type not in _POOLS:
        return None
    node = readers[0]
    if node.op_type == "ReduceMean":
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = g.constant_value(model.graph, node.input[1])
            axes = None if value is None else value.tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            return None
    return node


def _check_layer(model: onnx.ModelProto, info: ModelInfo, layer: str) -> None:
    if info.is_channels_last(layer):
        nchw = _nearest_nchw(model, info, layer)
        raise GraphError(f"layer {layer!r} is channels-last (N, h, w, C) inside the graph; perturbation and "
                         "mask-injection methods cut the network at an (N, C, h, w) layer"
                         + (f": name {nchw!r}, the nearest one before it" if nchw else "")
                         + ", or use a gradient method, which explains channels-last layers")
    g.check_produced(model.graph, [layer])
    g.check_feeds(model.graph, [layer], info.logits)


def _nearest_nchw(model: onnx.ModelProto, info: ModelInfo, layer: str) -> str | None:
    before = g.ancestors(model.graph, [layer])
    return next((cand.name for cand in reversed(info.layers) if cand.name in before), None)


def tail_inputs(model: onnx.ModelProto, layer: str, info: ModelInfo | None = None) -> list[str]:
    """What a tail graph at `layer` is fed: the layer first, then every other tensor computed from the
    image that the network after the layer reads (a skip connection around the layer, say)."""
    info = info or inspect(model)
    _check_layer(model, info, layer)
    graph = model.graph
    pool = pooled_by(model, layer)
    point = pool.output[0] if pool is not None else layer
    tail = (g.descendants(graph, point) - {point}) & g.ancestors(graph, [info.logits])
    from_image = g.descendants(graph, info.input_name)
    made_by = g.producers(graph)
    outside = []
    for node in graph.node:
        if not any(o in tail for o in node.output):
            continue
        for name in node.input:
            if name and name not in tail and name in from_image and name != point and name not in outside:
                outside.append(name)
    recomputed, values = [], None
    for name in outside:
        shapes = [made_by[t] for t in g.ancestors(graph, [name])
                  if t in made_by and made_by[t].op_type in ("Shape", "Size")]
        if not shapes:
            continue
        values = g.infer(model) if values is None else values
        if (not all(_batch_only(graph, node) and _batch_first(model, info, node.input[0], values) for node in shapes)
                or not _only_shape_derived(graph, name, shapes, from_image)):
            raise GraphError(f"the network after {layer!r} reads the shape of {name!r}, computed before it; "
                             "cannot run it on a batch of masked copies")
        recomputed.append(name)   # e.g. Reshape(x, [batch, -1]): recomputed in the tail from its own batch
    return [layer, *[name for name in outside if name != layer and name not in recomputed]]


def _batch_only(graph: onnx.GraphProto, shape: onnx.NodeProto) -> bool:
    """Whether only the batch dimension of this Shape node's result is used (Shape(end=1), or
    Gather/Slice of element 0), so it may read any tensor with the same batch."""
    attrs = {a.name: a.i for a in shape.attribute}
    if shape.op_type != "Shape" or attrs.get("start", 0) != 0:
        return False
    if attrs.get("end") == 1:
        return True
    for reader in g.consumers(graph).get(shape.output[0], []):
        if reader.op_type == "Gather" and reader.input[0] == shape.output[0]:
            index = g.constant_value(graph, reader.input[1])
            if index is None or np.asarray(index).reshape(-1).tolist() != [0] or (
                    {a.name: a.i for a in reader.attribute}.get("axis", 0) != 0):
                return False
        elif reader.op_type == "Slice" and reader.input[0] == shape.output[0]:
            bounds = [g.constant_value(graph, n) for n in reader.input[1:3]]
            if any(b is None for b in bounds) or [np.asarray(b).reshape(-1).tolist() for b in bounds] != [[0], [1]]:
                return False
        else:
            return False
    return True


def _batch_first(model: onnx.ModelProto, info: ModelInfo, tensor: str, values: dict) -> bool:
    """Whether axis 0 of `tensor` is the image batch (a Reshape or Transpose before it could move it)."""
    if tensor == info.input_name:
        return info.layout in ("NCHW", "NHWC")
    dims = g.dims(values[tensor]) if tensor in values else []
    return bool(dims) and isinstance(info.input_shape[0], str) and dims[0] == info.input_shape[0]


def _only_shape_derived(graph: onnx.GraphProto, name: str, shapes: list[onnx.NodeProto], from_image: set) -> bool:
    """Whether image values reach `name` only through `shapes` (it is arithmetic on their results)."""
    through = set().union(*(g.descendants(graph, node.output[0]) for node in shapes))
    made_by = g.producers(graph)
    for tensor in g.ancestors(graph, [name]):
        node = made_by.get(tensor)
        if tensor in through and node is not None and node.op_type not in ("Shape", "Size"):
            if any(i in from_image and i not in through for i in node.input if i):
                return False
    return True


def _tail_graph(model: onnx.ModelProto, info: ModelInfo, layer: str, full_logits: bool,
                inject) -> onnx.ModelProto:
    """The tail after `layer`, fed per-image tensors; `inject(nodes, pool)` adds the nodes making the
    (N*M, ...) injected tensor at the injection point (the layer, or the output of `pool`, its only
    reader, when that is a global average pool) and returns (its name, a (1,) int64 tensor holding M)."""
    fed = tail_inputs(model, layer, info)
    result, logits = _prepared(model, info)
    graph = result.graph
    pool = pooled_by(result, layer)
    point = pool.output[0] if pool is not None else layer
    values = g.infer(result) if len(fed) > 1 else {}
    nodes = _Nodes(result, _P)
    injected, copies = inject(nodes, pool)
    renamed = {point: injected}
    for name in fed[1:]:
        rank = len(g.dims(values[name])) if name in values else 0
        if not rank:
            raise GraphError(f"the rank of {name!r} is unknown; cannot repeat it per mask")
        ones = nodes.const([1] * (rank - 1))
        grown = nodes.op("Expand", [nodes.unsqueeze(name, [1]),
                                    nodes.op("Concat", [nodes.const([1]), copies, ones], axis=0)])
        renamed[name] = nodes.flat_batch(grown, name)
    # the head (what computes the fed tensors from the image) goes; constants it shares stay
    head = (g.ancestors(graph, fed) & g.descendants(graph, info.input_name)) | set(fed)
    tail_nodes = [n for n in graph.node if not set(n.output) & head]
    for node in tail_nodes:  # a pool stays on the un-masked layer (not renamed): once per image
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    from_image = g.descendants(graph, info.input_name)
    available = {o for n in tail_nodes + nodes.nodes for o in n.output} | set(fed)
    for node in tail_nodes:
        if node.op_type == "Shape" and node.input[0] in from_image and node.input[0] not in available:
            node.input[0] = injected   # only its batch is read (tail_inputs checked): images x masks here
    missing = sorted({i for n in tail_nodes for i in n.input if i in from_image and i not in available})
    if missing:
        raise GraphError(f"the network after {layer!r} reads {missing[0]!r}, which the tail cannot recompute")
    del graph.node[:]
    graph.node.extend(tail_nodes + nodes.nodes)
    del graph.input[:]
    graph.input.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in fed)
    _add_outputs(result, info, logits, nodes, layer, full_logits)
    return result


def _add_outputs(model: onnx.ModelProto, info: ModelInfo, logits: str, nodes: _Nodes, image: str,
                 full_logits: bool) -> None:
    """Outputs `scores` (N, M) = sum(class_weights * output) per copy, and the outputs (N, M, *output) if asked:
    class_weights is shaped like the output (a classifier's (N, classes) rows, a segmenter's maps...).

    Without full logits, a final Gemm with a constant weight becomes a dot product with
    class_weights @ W: the same scores at a fraction of the cost of every class.
    """
    out_axes = list(range(2, len(info.output_shape) + 1))   # the output's own axes after (N, M)
    graph = model.graph
    start = len(nodes.nodes)
    rows = CLASS_WEIGHTS
    gemm = g.producers(graph).get(logits)
    linear = linear_layer(graph, gemm) if gemm is not None and gemm.op_type == "Gemm" and not full_logits else None
    if linear is not None:
        weight, bias, _ = linear
        feature = nodes.per_image(gemm.input[0], image)                                  # (N, M, K)
        projected = nodes.op("MatMul", [rows, nodes.const(weight, np.float32)])          # (N, K)
        scores = nodes.reduce("ReduceSum", nodes.op("Mul", [feature, nodes.unsqueeze(projected, [1])]), [2], 0)
        offset = nodes.unsqueeze(nodes.op("MatMul", [rows, nodes.const(bias, np.float32)]), [1])
        nodes.op("Add", [scores, offset], out=SCORES)   # the Gemm, no longer read, is pruned
    else:
        per_copy = nodes.per_image(logits, image)                                        # (N, M, classes)
        product = nodes.op("Mul", [per_copy, nodes.unsqueeze(rows, [1])])
        nodes.op("Identity", [nodes.reduce("ReduceSum", product, out_axes, 0)], out=SCORES)
        if full_logits:
            nodes.op("Identity", [per_copy], out=LOGITS)
    graph.node.extend(nodes.nodes[start:])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["N", "M"]))
    if full_logits:
        graph.output.append(helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT,
                                                          ["N", "M", *info.weights_shape[1:]]))
    graph.input.append(helper.make_tensor_value_info(CLASS_WEIGHTS, TensorProto.FLOAT, info.weights_shape))


def channel_tail(model: onnx.ModelProto, layer: str, full_logits: bool = False,
                 info: ModelInfo | None = None, fill: bool = True) -> onnx.ModelProto:
    """Inputs: tail_inputs(model, layer) (N, ...), `masks` (N|1, M, K), `fill` broadcastable to
    (N|1, M, K) (with fill=False, no such input: zeros), class_weights (N, classes). Outputs
    `scores` (N, M) [and `logits` (N, M, classes)] of the tail run on A*m + fill*(1-m)."""
    info = info or inspect(model)
    head = linear_head(model, layer) if not (full_logits or fill) and pooled_by(model, layer) else None
    if head is not None and head[2] == info.logits:
        return _linear_channel_tail(model, layer, head[0], head[1], info)

    def inject(nodes: _Nodes, pool):
        point = layer if pool is None else pool.output[0]
        trailing = [3, 4] if pool is None or _keeps_dims(pool) else []
        mask = nodes.unsqueeze(MASKS, trailing) if trailing else MASKS                # (B, M, K, 1, 1)
        mixed = nodes.op("Mul", [mask, nodes.unsqueeze(point, [1])])                  # (N, M, K, ...)
        if fill:
            # A*m + fill*(1-m), not fill + m*(A-fill): exact for 0/1 masks even with pytorch-grad-cam's
            # fill of min(A) - 1e7, where A - fill would round A away
            value = nodes.unsqueeze(FILL, trailing) if trailing else FILL
            rest = nodes.op("Sub", [nodes.const(1.0, np.float32), mask])
            mixed = nodes.op("Add", [mixed, nodes.op("Mul", [value, rest])])
        return nodes.flat_batch(mixed, point), nodes.shape_from(MASKS, 1, 2)

    result = _tail_graph(model, info, layer, full_logits, inject)
    result.graph.input.append(helper.make_tensor_value_info(MASKS, TensorProto.FLOAT, [None, "M", None]))
    if fill:
        result.graph.input.append(helper.make_tensor_value_info(FILL, TensorProto.FLOAT, None))
    return _finish(result)


def _linear_channel_tail(model: onnx.ModelProto, layer: str, weight: np.ndarray, bias: np.ndarray,
                         info: ModelInfo) -> onnx.ModelProto:
    """The tail GAP -> linear on A*m, folded: score = m . (mean(A) * (rows @ W)) + rows @ b, so the
    copies cost one (M, K) x (K,) product each and no copy of A is ever made."""
    out = onnx.ModelProto()
    out.opset_import.add(domain="", version=17)
    out.ir_version = 8
    nodes = _Nodes(out, _P)
    pooled = nodes.reduce("ReduceMean", layer, [2, 3], 0)                              # (N, K)
    projected = nodes.op("MatMul", [CLASS_WEIGHTS, nodes.const(weight, np.float32)])   # (N, K)
    column = nodes.unsqueeze(nodes.op("Mul", [pooled, projected]), [2])                # (N, K, 1)
    scores = nodes.op("Reshape", [nodes.op("MatMul", [MASKS, column]), nodes.const([0, -1])])
    offset = nodes.unsqueeze(nodes.op("MatMul", [CLASS_WEIGHTS, nodes.const(bias, np.float32)]), [1])
    nodes.op("Add", [scores, offset], out=SCORES)
    classes = len(bias)
    out.graph.CopyFrom(helper.make_graph(
        nodes.nodes, "linear_channel_tail",
        [helper.make_tensor_value_info(layer, TensorProto.FLOAT, ["N", len(weight[0]), None, None]),
         helper.make_tensor_value_info(CLASS_WEIGHTS, TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info(MASKS, TensorProto.FLOAT, [None, "M", len(weight[0])])],
        [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["N", "M"])]))
    return out


def _keeps_dims(pool: onnx.NodeProto) -> bool:
    return pool.op_type == "GlobalAveragePool" or next((a.i for a in pool.attribute if a.name == "keepdims"), 1) == 1


def mosaic_tail(model: onnx.ModelProto, layer: str, full_logits: bool = True,
                info: ModelInfo | None = None) -> onnx.ModelProto:
    """Inputs: tail_inputs(model, layer), `positions` (M,) int64 flat indices i*w + j, `spread` (M, h*w),
    class_weights. Copy m holds A[:, positions[m]] * spread[m, p] at every position p (Recipro-CAM:
    spread is one-hot for the plain variant, the 3x3 Gaussian around the position otherwise)."""
    def inject(nodes: _Nodes, pool):
        flat = nodes.op("Reshape", [layer, nodes.const([0, 0, -1])])                    # (N, K, P)
        centre = nodes.op("Gather", [flat, POSITIONS], axis=2)                          # (N, K, M)
        copies = nodes.shape_from(POSITIONS, 0, 1)
        if pool is None:
            spread = nodes.op("Mul", [nodes.unsqueeze(centre, [3]), SPREAD])             # (N, K, M, P)
            moved = nodes.op("Transpose", [spread], perm=[0, 2, 1, 3])
            return nodes.flat_batch(moved, layer), copies
        share = nodes.reduce("ReduceMean", SPREAD, [1], 0)                             # (M,)
        moved = nodes.op("Transpose", [nodes.op("Mul", [centre, share])], perm=[0, 2, 1])  # (N, M, K)
        return nodes.flat_batch(moved, pool.output[0]), copies

    result = _tail_graph(model, info or inspect(model), layer, full_logits, inject)
    result.graph.input.extend([helper.make_tensor_value_info(POSITIONS, TensorProto.INT64, ["M"]),
                               helper.make_tensor_value_info(SPREAD, TensorProto.FLOAT, ["M", None])])
    return _finish(result)


def masked_inputs(model: onnx.ModelProto, normalise: bool, full_logits: bool = False, baseline: bool = True,
                  info: ModelInfo | None = None) -> onnx.ModelProto:
    """The whole network on x*m + baseline*(1-m), M masks per image, built in the graph.

    Inputs: the image input (N, C, H, W in the model's layout), `maps` (N|1, M, h, w),
    `rows_interp` (H, h) or (M, H, h) and `cols_interp_t` (w, W) or (M, w, W) (so the upsampled map
    is rows @ map @ cols), `eps` (scalar; with `normalise`, m = (U - min) / (max - min + eps) per map),
    `scale` broadcastable to (N|1, M, 1, 1), `noise` broadcastable to (N|1, M, H, W) (m = m*scale + noise),
    `baseline` broadcastable to the image (without `baseline`, no such input: x*m), class_weights.
    Outputs as channel_tail.
    """
    info = info or inspect(model)
    result, logits = _prepared(model, info)
    graph = result.graph
    image = info.input_name
    nodes = _Nodes(result, _P)
    up = nodes.op("MatMul", [nodes.op("MatMul", [ROWS, MAPS]), COLS])                 # (B, M, H, W)
    if normalise:
        low = nodes.reduce("ReduceMin", up, [2, 3])
        span = nodes.op("Add", [nodes.op("Sub", [nodes.reduce("ReduceMax", up, [2, 3]), low]), EPS])
        span = nodes.op("Max", [span, nodes.const(1e-30, np.float32)])   # a constant map becomes 0, not NaN
        up = nodes.op("Div", [nodes.op("Sub", [up, low]), span])
    mask = nodes.op("Add", [nodes.op("Mul", [up, SCALE]), NOISE])
    mask = nodes.unsqueeze(mask, [2] if info.layout == "NCHW" else [4])                # (B, M, 1, H, W)
    mixed = nodes.op("Mul", [nodes.unsqueeze(image, [1]), mask])                       # (N, M, C, H, W)
    if baseline:
        rest = nodes.op("Sub", [nodes.const(1.0, np.float32), mask])
        mixed = nodes.op("Add", [mixed, nodes.op("Mul", [nodes.unsqueeze(BASELINE, [1]), rest])])
    masked = nodes.flat_batch(mixed, image)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == image:
                node.input[k] = masked
    graph.node.extend(nodes.nodes)
    nodes.nodes = []
    _add_outputs(result, info, logits, nodes, image, full_logits)
    graph.input.extend([helper.make_tensor_value_info(MAPS, TensorProto.FLOAT, [None, "M", None, None]),
                        helper.make_tensor_value_info(ROWS, TensorProto.FLOAT, None),
                        helper.make_tensor_value_info(COLS, TensorProto.FLOAT, None),
                        helper.make_tensor_value_info(EPS, TensorProto.FLOAT, []),
                        helper.make_tensor_value_info(SCALE, TensorProto.FLOAT, None),
                        helper.make_tensor_value_info(NOISE, TensorProto.FLOAT, None)])
    if baseline:
        graph.input.append(helper.make_tensor_value_info(BASELINE, TensorProto.FLOAT, None))
    return _finish(result)


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    del graph.value_info[:]
    g.toposort(graph)
    return g.prune(model)
