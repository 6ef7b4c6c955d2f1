"""Insert the Hessian of the class score at chosen tensors, applied to those tensors, beside their gradients."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad
from onnx import TensorProto, helper

from . import ad_rules, static
from . import graph as g
from .errors import GraphError
from .gradients import (
    _DELTA,
    CLASS_WEIGHTS,
    GRAD_PREFIX,
    LOGITS,
    _drop_deltas,
    _finish,
    _loaded,
    _seed_nodes,
    _shift,
)
from .model_info import ModelInfo

HVP_PREFIX = "camserve::hvp::"


def add_hessian(model, layers: list[str], info: ModelInfo | None = None) -> onnx.ModelProto:
    """A graph with inputs (image, class_weights) and outputs, in this order:

    `logits`, the activation A of each layer (its own tensor name), `grad::<layer>` = d s / dA and
    `hvp::<layer>` = (d2 s / dA2) A, for s = sum(class_weights * logits) per image (a zero row: the
    top-1 class). That is torch's autograd.grad(grad, A, grad_outputs=A): the second derivative
    follows every path from A to the logits, through later layers too, but never mixes layers: each
    layer's product is taken in its own direction (one tangent slot per layer).

    Built like add_gradients up to onnx-ad's reverse pass (camserve's scoped rules); onnx-ad's stock
    forward mode then differentiates that adjoint graph once more with respect to the shifts, its
    tangent seed made in the graph from A itself. The seeds of both passes become graph-made values
    only after the passes, so onnx-ad never sees the in-graph argmax.
    """
    model, info = _loaded(model, info)
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise GraphError("nothing to differentiate: give layers")
    g.check_produced(model.graph, layers)
    g.check_feeds(model.graph, layers, info.logits, "; it has no gradient")
    g.check_free(model.graph, {LOGITS, CLASS_WEIGHTS} - {info.logits}, "Hessian")

    work, stripped = static.without_weights(model)
    g.fold_constants(work)
    static.make_static(work, info.input_name)
    del work.graph.output[:]
    work.graph.output.append(helper.make_tensor_value_info(info.logits, TensorProto.FLOAT, info.weights_shape))
    g.prune(work)
    _shift(work, layers)
    if g.opset(work) < 16:  # MaxPool's adjoint needs ScatterND with reduction (opset 16)
        work = g.upgrade(work, 17)
    deltas = [_DELTA + name for name in layers]
    try:
        reversed_ = ad_rules.reverse(work, stripped, inputs=deltas, outputs=[info.logits])
        primal = {v.name for v in work.graph.input}
        seed = next(i.name for i in reversed_.graph.input if i.name not in primal)
        adjoints = [o.name for o in reversed_.graph.output if o.name != info.logits]
        # stock forward mode over the adjoint graph: onnx-ad's forward rules are never replaced
        twice = onnx_ad.forward(reversed_, inputs=deltas, outputs=adjoints, layout="onnx")
    except onnx_ad.UnsupportedOperator as error:
        raise GraphError(f"cannot differentiate this graph twice: {error}") from error
    graph = twice.graph
    before = {v.name for v in reversed_.graph.input} | {v.name for v in reversed_.graph.output}
    directions = [i.name for i in graph.input if i.name not in before]
    tangents = [o.name for o in graph.output if o.name not in before]

    nodes = _directions(graph, layers, directions)
    nodes += _drop_deltas(graph, layers)
    nodes += _seed_nodes(twice, info, seed)
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, info.weights_shape)]
    if info.logits != LOGITS:
        nodes.append(helper.make_node("Identity", [info.logits], [LOGITS]))
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in layers]
    drop_axes = g.constant_node("camserve::hvp::drop_seed_axes", np.zeros(4, np.int64))
    nodes.append(drop_axes)
    grads = [GRAD_PREFIX + name for name in layers]
    for adjoint, name in zip(adjoints, grads):  # (N, K, h, w, 1) -> (N, K, h, w)
        nodes.append(helper.make_node("Reshape", [adjoint, drop_axes.output[0]], [name]))
    for k, (tangent, name) in enumerate(zip(tangents, layers)):  # (N, K, h, w, 1, layers): this layer's slot
        slot = g.constant_node(f"camserve::hvp::slot::{name}", np.array(k, np.int64))
        taken = f"camserve::hvp::taken::{name}"
        nodes += [slot, helper.make_node("Gather", [tangent, slot.output[0]], [taken], axis=-1),
                  helper.make_node("Reshape", [taken, drop_axes.output[0]], [HVP_PREFIX + name])]
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in grads]
    outputs += [helper.make_tensor_value_info(HVP_PREFIX + name, TensorProto.FLOAT, None) for name in layers]

    return _finish(twice, set(deltas) | set(directions) | {seed}, nodes, outputs, stripped, info)


def _directions(graph: onnx.GraphProto, layers: list[str], directions: list[str]) -> list[onnx.NodeProto]:
    """Each tangent seed (A + a trailing axis, one slot per layer) made from A in its own slot, zeros elsewhere.

    Every reader of a seed input reads the made value instead; one layer needs no zeros at all.
    """
    nodes = []
    last = g.constant_node("camserve::hvp::last_axis", np.array([-1], np.int64))
    nodes.append(last)
    made = {}
    for k, (name, direction) in enumerate(zip(layers, directions)):
        column = f"camserve::hvp::direction::{name}"
        if len(layers) == 1:
            nodes.append(helper.make_node("Unsqueeze", [name, last.output[0]], [column]))
        else:
            unit = g.constant_node(f"camserve::hvp::unit::{name}", np.eye(len(layers), dtype=np.float32)[k])
            nodes += [unit, helper.make_node("Unsqueeze", [name, last.output[0]], [column + "::1"]),
                      helper.make_node("Mul", [column + "::1", unit.output[0]], [column])]
        made[direction] = column
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in made:
                node.input[i] = made[name]
    return nodes
