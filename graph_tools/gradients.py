"""Insert d(score)/d(activation) for chosen tensors into the graph, seeded by a `class_weights` input.

The score is a linear functional of the model's output: sum(W * output) per image, W the
`class_weights` input shaped like the output (a classifier's (N, classes) rows, a segmenter's map,
a detector's raw head), or (N, T, *output) with `seeds`: T targets per image in one run.
The adjoint of an activation A is taken with onnx-ad: A is shifted by a zero-valued `delta` input,
the model is reversed with respect to those deltas, and each delta input is then replaced by
zeros made in the graph (ConstantOfShape(Shape(A))), so callers feed only the image and the
weights. For a classifier a class-weight row of all zeros means "the top-1 class of this image",
resolved inside the graph, so the default target costs no extra forward pass.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ad
from onnx import TensorProto, helper, numpy_helper

from . import ad_rules, quant, static
from . import graph as g
from .errors import GraphError
from .model_info import ModelInfo, inspect, load

GRAD_PREFIX = "camserve::grad::"
CLASS_WEIGHTS = "camserve::class_weights"
LOGITS = "camserve::logits"
_DELTA = "camserve::delta::"
_SHIFTED = "::camserve::shifted"


def bias_terms(model: onnx.ModelProto, info: ModelInfo | None = None) -> list[tuple[str, np.ndarray]]:
    """(output tensor, effective bias) of every Conv with a bias and every BatchNormalization, in order.

    Only tensors that are candidate layers (4-D, spatial size > 1) are listed: FullGrad's bias maps
    of 1x1 tensors (squeeze-excitation convs) are constant and normalise to zero anyway.
    """
    model = load(model)
    graph = model.graph
    spatial = set((info or inspect(model)).layer_names())
    terms = []
    for node in graph.node:
        out = node.output[0]
        if out not in spatial:
            continue
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = g.constant_value(graph, node.input[2])
        elif node.op_type == "BatchNormalization":
            scale, beta, mean, var = (g.constant_value(graph, n) for n in node.input[1:5])
            if any(v is None for v in (scale, beta, mean, var)):
                continue
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            bias = beta - mean * scale / np.sqrt(var + eps)
        else:
            continue
        if bias is not None:
            terms.append((out, bias.astype(np.float32)))
    return terms


def add_gradients(model, layers: list[str], input_gradient: bool = False,
                  activations: list[str] | None = None, info: ModelInfo | None = None,
                  seeds: bool = False, ste: str = "straight") -> onnx.ModelProto:
    """A graph with inputs (image, class_weights) and outputs, in this order:

    `logits` (the output targets weigh, `info.logits`), the activation of each layer (its own tensor
    name; only those in `activations` when given), `grad::<layer>` for each layer, and `grad::<input>`
    when `input_gradient` is set. Gradients are of sum(class_weights * logits) per image; with `seeds`,
    class_weights is (N, T, *output) and each gradient (N, T, *layer), one per target. The batch axis
    must already be dynamic (see make_batch_dynamic). `info` is inspect(model), when the caller has it.

    The rewriting runs on a copy whose large weights are graph inputs (their values are never
    needed for it), so shape inference and onnx-ad's passes do not serialise them again and again;
    the weights are put back at the end.
    """
    model, info = _loaded(model, info)
    layers = list(dict.fromkeys(layers))
    g.check_produced(model.graph, layers)
    g.check_feeds(model.graph, layers, info.logits, "; it has no gradient")
    g.check_free(model.graph, {LOGITS, CLASS_WEIGHTS} - {info.logits}, "gradient")
    if not layers and not input_gradient:
        raise GraphError("nothing to differentiate: give layers or input_gradient=True")

    work, stripped = static.without_weights(model)
    g.fold_constants(work)
    static.make_static(work, info.input_name)
    if quant.has_qdq(work):   # a QDQ int8 model: its activation quantisation differentiated straight through
        quant.fake_quantized(work, stripped, ste)
    if quant.has_integer_ops(work):   # a dynamically quantised one: its ConvInteger / MatMulInteger in float
        quant.integer_ops_as_float(work, ste)
    graph = work.graph
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(info.logits, TensorProto.FLOAT, info.weights_shape))
    g.prune(work)
    _shift(work, layers)

    wrt = [_DELTA + name for name in layers] + ([info.input_name] if input_gradient else [])
    if g.opset(work) < 16:  # MaxPool's adjoint needs ScatterND with reduction (opset 16)
        work = g.upgrade(work, 17)  # without an adapter: differentiate at the old opset
    try:  # onnx-ad with the dynamic-batch Conv/pool adjoints, for this call only
        reversed_ = ad_rules.reverse(work, stripped, inputs=wrt, outputs=[info.logits])
    except onnx_ad.UnsupportedOperator as error:
        raise GraphError(f"cannot differentiate this graph: {error}") from error
    graph = reversed_.graph
    seed = next(i.name for i in graph.input if i.name not in {v.name for v in work.graph.input})
    adjoints = [o.name for o in graph.output if o.name != info.logits]

    nodes = _drop_deltas(graph, layers)
    nodes += _seed_nodes(reversed_, info, seed, seeds)
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, info.weights_shape)]
    if info.logits != LOGITS:
        nodes.append(helper.make_node("Identity", [info.logits], [LOGITS]))
    shown = layers if activations is None else [name for name in layers if name in set(activations)]
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in shown]
    drop_axis = g.constant_node(GRAD_PREFIX + "drop_seed_axis", np.zeros(4, np.int64))
    nodes.append(drop_axis)
    for adjoint, name in zip(adjoints, wrt):
        target = GRAD_PREFIX + name.removeprefix(_DELTA)
        if seeds:   # (N, K, h, w, T) -> (N, T, K, h, w)
            nodes.append(helper.make_node("Transpose", [adjoint], [target], perm=[0, 4, 1, 2, 3]))
        else:       # (N, K, h, w, 1) -> (N, K, h, w)
            nodes.append(helper.make_node("Reshape", [adjoint, drop_axis.output[0]], [target]))
        outputs.append(helper.make_tensor_value_info(target, TensorProto.FLOAT, None))

    finished = _finish(reversed_, set(wrt[:len(layers)]) | {seed}, nodes, outputs, stripped, info, seeds)
    return finished if seeds else _alias_seed_moves(finished)


def _loaded(model, info: ModelInfo | None) -> tuple[onnx.ModelProto, ModelInfo]:
    """The model to differentiate (opset 9 or newer) and its inspection."""
    model = load(model)
    if g.opset(model) < 9:
        raise GraphError(f"opset {g.opset(model)} is too old for gradient graphs (need >= 9); "
                         "convert with onnx.version_converter first")
    return model, info or inspect(model)


def _finish(model: onnx.ModelProto, gone: set[str], nodes: list, outputs: list, stripped: dict,
            info: ModelInfo, seeds: bool = False) -> onnx.ModelProto:
    """A differentiated graph made servable: the inputs in `gone` (and the stripped weights) dropped, the
    class_weights input added (with a targets axis T after the batch for `seeds`), `outputs` its outputs,
    `nodes` appended, the weights it reads put back, then sorted, transposes cancelled and pruned."""
    graph = model.graph
    keep_inputs = [i for i in graph.input if i.name not in gone | set(stripped)]
    shape = info.weights_shape
    shape = [shape[0], "T", *shape[1:]] if seeds else shape
    weights = helper.make_tensor_value_info(CLASS_WEIGHTS, TensorProto.FLOAT, shape)
    del graph.input[:]
    graph.input.extend(keep_inputs + [weights])
    del graph.output[:]
    graph.output.extend(outputs)
    graph.node.extend(nodes)
    used = {i for node in graph.node for i in node.input}
    graph.initializer.extend(tensor for name, tensor in stripped.items() if name in used)
    g.toposort(graph)
    g.cancel_transposes(graph)
    return g.prune(g.fold_constant_transposes(g.prune(model)))


def _alias_seed_moves(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx-ad's seed-axis Transposes (its Conv and MatMul adjoints move the trailing seed axis to the front and
    back) as Squeeze + Unsqueeze when the graph has one seed: moving a size-1 axis moves no data, and ONNX Runtime
    runs Squeeze/Unsqueeze as views where a Transpose copies the tensor (about 2% of a ResNet-50 gradient run)."""
    if g.opset(model) < 13:   # Squeeze's axes became an input at 13; every differentiated graph is 16 or newer
        return model
    graph = model.graph
    nodes = []
    for node in graph.node:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        rank = len(perm) - 1 if perm else 0
        front, back = perm == [rank, *range(rank)], perm == [*range(1, rank + 1), 0]
        if node.op_type != "Transpose" or not rank or not (front or back) or "seed_" not in node.output[0]:
            nodes.append(node)
            continue
        out = node.output[0]
        drop, add = ([rank], [0]) if front else ([0], [rank])
        nodes += [g.constant_node(out + "::drop", np.array(drop, np.int64)),
                  g.constant_node(out + "::add", np.array(add, np.int64)),
                  helper.make_node("Squeeze", [node.input[0], out + "::drop"], [out + "::squeezed"]),
                  helper.make_node("Unsqueeze", [out + "::squeezed", out + "::add"], [out])]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _shift(model: onnx.ModelProto, layers: list[str]) -> None:
    """Route every consumer of each layer through `layer + delta` (delta is a new graph input)."""
    graph = model.graph
    wanted = set(layers)
    values = g.infer(model)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in wanted:
                node.input[k] = name + _SHIFTED
    for name in layers:
        shape = g.dims(values[name]) if name in values else []
        if not shape:
            raise GraphError(f"the rank of {name!r} is unknown even after shape inference")
        graph.input.append(helper.make_tensor_value_info(_DELTA + name, TensorProto.FLOAT, shape))
        graph.node.append(helper.make_node("Add", [name, _DELTA + name], [name + _SHIFTED]))
    g.toposort(graph)


def _drop_deltas(graph: onnx.GraphProto, layers: list[str]) -> list[onnx.NodeProto]:
    """Remove the zero shifts again; returns the nodes that must make zeros where that is not possible.

    The adjoint of a linear shift never reads the shift's values, only (through Shape) its shape,
    which is the layer's own. So `A + delta` becomes `Identity(A)` and `Shape(delta)` reads A: the
    run keeps its fusions (Conv + Relu) and allocates no zero tensors. A delta read any other way
    is made by ConstantOfShape(Shape(A)).
    """
    users = g.consumers(graph)
    zeros = []
    for name in layers:
        delta = _DELTA + name
        readers = users.get(delta, [])
        shift = [n for n in readers if n.op_type == "Add" and n.output[0] == name + _SHIFTED]
        if all(n.op_type == "Shape" for n in readers if n not in shift):
            for node in readers:
                if node in shift:
                    node.op_type = "Identity"
                    del node.input[:]
                    node.input.append(name)
                else:
                    node.input[0] = name
            continue
        shape = name + "::camserve::shape"
        zeros.append(helper.make_node("Shape", [name], [shape]))
        zeros.append(helper.make_node("ConstantOfShape", [shape], [delta],
                                      value=numpy_helper.from_array(np.zeros(1, np.float32))))
    return zeros


def _seed_nodes(model: onnx.ModelProto, info: ModelInfo, seed: str, seeds: bool = False) -> list[onnx.NodeProto]:
    """onnx-ad's seed (the output's shape and a trailing seed axis) from class_weights: a classifier's (N, C, 1)
    with all-zero rows replaced by the one-hot of argmax(logits); any other output's weights as they are, the
    targets axis T of `seeds` moved last."""
    p = "camserve::seed::"
    rank = len(info.output_shape)
    if seeds:
        return [helper.make_node("Transpose", [CLASS_WEIGHTS], [seed], perm=[0, *range(2, rank + 1), 1])]
    if info.kind != "classifier":
        last = g.constant_node(p + "last_axis", np.array([-1], np.int64))
        return [last, helper.make_node("Unsqueeze", [CLASS_WEIGHTS, last.output[0]], [seed])]
    logits = info.logits
    nodes = [helper.make_node("Abs", [CLASS_WEIGHTS], [p + "abs"])]
    nodes += g.reduce_node("ReduceSum", model, p + "abs", p + "l1", [1])
    nodes += [
        g.constant_node(p + "tiny", np.array(1e-30, np.float32)),
        helper.make_node("Less", [p + "l1", p + "tiny"], [p + "empty"]),
        helper.make_node("ArgMax", [logits], [p + "top1"], axis=1, keepdims=0),
        helper.make_node("Shape", [logits], [p + "shape"]),
        g.constant_node(p + "class_axis", np.array([1], np.int64)),
        helper.make_node("Gather", [p + "shape", p + "class_axis"], [p + "depth"], axis=0),
        g.constant_node(p + "onoff", np.array([0.0, 1.0], np.float32)),
        helper.make_node("OneHot", [p + "top1", p + "depth", p + "onoff"], [p + "onehot"], axis=-1),
        helper.make_node("Where", [p + "empty", p + "onehot", CLASS_WEIGHTS], [p + "rows"]),
        g.constant_node(p + "seed_shape", np.array([0, 0, 1], np.int64)),
        helper.make_node("Reshape", [p + "rows", p + "seed_shape"], [seed]),
    ]
    return nodes


ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
               "Softplus", "PRelu", "Celu", "Gelu", "Mish"}


def conv_blocks(model: onnx.ModelProto, info: ModelInfo | None = None) -> list[tuple[str, str, np.ndarray]]:
    """(pre-activation z, post-activation A, bias b) for every spatial Conv, in topological order.

    A is the output of the elementwise activation that is the conv's only consumer, else z itself;
    b is the conv's bias (zeros when it has none). This is what Integrative CAM reads per layer.
    """
    model = load(model)
    graph = model.graph
    shapes = {layer.name: layer.shape for layer in (info or inspect(model)).layers}
    spatial = set(shapes)
    users = g.consumers(graph)
    blocks = []
    for node in graph.node:
        z = node.output[0]
        if node.op_type != "Conv" or z not in spatial:
            continue
        nexts = users.get(z, [])
        a = nexts[0].output[0] if len(nexts) == 1 and nexts[0].op_type in ACTIVATIONS else z
        bias = g.constant_value(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None:
            bias = np.zeros(shapes[z][1], np.float32)
        blocks.append((z, a, bias.astype(np.float32)))
    return blocks
