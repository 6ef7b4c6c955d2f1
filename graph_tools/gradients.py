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

from . import ad_rules
from . import graph as g
from .errors import GraphError
from .model_info import ModelInfo, inspect, load

GRAD_PREFIX = "grad::"
CLASS_WEIGHTS = "class_weights"
LOGITS = "logits"
_DELTA = "delta::"
_SHIFTED = "::shifted"


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
                  seeds: bool = False) -> onnx.ModelProto:
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

    work, stripped = _without_weights(model)
    g.fold_constants(work)
    _static_resizes(work)
    _static_reshapes(work, info.input_name)
    _static_slices(work, info.input_name)
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
    drop_axis = g.constant_node("grad::drop_seed_axis", np.zeros(4, np.int64))
    nodes.append(drop_axis)
    for adjoint, name in zip(adjoints, wrt):
        target = GRAD_PREFIX + name.removeprefix(_DELTA)
        if seeds:   # (N, K, h, w, T) -> (N, T, K, h, w)
            nodes.append(helper.make_node("Transpose", [adjoint], [target], perm=[0, 4, 1, 2, 3]))
        else:       # (N, K, h, w, 1) -> (N, K, h, w)
            nodes.append(helper.make_node("Reshape", [adjoint, drop_axis.output[0]], [target]))
        outputs.append(helper.make_tensor_value_info(target, TensorProto.FLOAT, None))

    return _finish(reversed_, set(wrt[:len(layers)]) | {seed}, nodes, outputs, stripped, info, seeds)


def _static_resizes(model: onnx.ModelProto) -> None:
    """Resizes whose `sizes` are computed at run time (torch's interpolate(size=x.shape[2:])) given constant scales
    instead, where shape inference knows both spatial sizes: onnx-ad differentiates a Resize only with constant
    extents. The same resize: ONNX Runtime maps coordinates by out/in either way, and floor(in * out/in) = out is
    checked."""
    graph = model.graph
    values = g.infer(model)
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        if g.constant_value(graph, node.input[3]) is not None:
            continue
        shape_in = g.dims(values[node.input[0]]) if node.input[0] in values else []
        shape_out = g.dims(values[node.output[0]]) if node.output[0] in values else []
        known = shape_in[1:] + shape_out[1:]
        if len(shape_in) != 4 or len(shape_out) != 4 or not all(isinstance(d, int) for d in known):
            continue
        scales = np.array([1.0, 1.0] + [o / i for i, o in zip(shape_in[2:], shape_out[2:])], np.float32)
        if any(int(np.floor(np.float32(i) * s)) != o for i, o, s in zip(shape_in[2:], shape_out[2:], scales[2:])):
            continue
        name = node.output[0] + "::scales"
        graph.initializer.append(numpy_helper.from_array(scales, name))
        if not node.input[1]:
            node.input[1] = ""
        node.input[2] = name
        del node.input[3]


def _static_reshapes(model: onnx.ModelProto, image: str) -> None:
    """Reshapes whose target shape is computed at run time from the batch (flatten(2) in a detector head, once the
    batch is dynamic) given a constant one, -1 for the batch, where shape inference at batch 1 and 2 finds the
    output (batch, static dims...): onnx-ad's Concat and Split adjoints need the extents they cut along."""
    graph = model.graph
    reshapes = [n for n in graph.node if n.op_type == "Reshape" and g.constant_value(graph, n.input[1]) is None]
    if not reshapes:
        return
    shapes = [{n.output[0]: g.dims(values[n.output[0]]) if n.output[0] in values else [] for n in reshapes}
              for values in _at_batches_one_and_two(model, image)]
    for node in reshapes:
        one, two = shapes[0][node.output[0]], shapes[1][node.output[0]]
        if not one or not all(isinstance(d, int) for d in one + two) or one[0] != 1 or two[0] != 2 \
                or one[1:] != two[1:]:
            continue
        name = node.output[0] + "::shape"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, *one[1:]], np.int64), name))
        node.input[1] = name


def _at_batches_one_and_two(model: onnx.ModelProto, image: str) -> list[dict]:
    """What shape inference finds with the batch fixed at 1 and at 2: an extent equal in both does not depend on
    the batch."""
    found = []
    for batch in (1, 2):
        probe = g.copy(model)
        g.set_input_dims(probe, image, {0: batch}, only_symbolic=False)
        found.append(g.infer(probe))
    return found


# the integer operands onnx-ad needs constant: Slice's starts/ends/axes/steps, Split's split
_INDEX_OPERANDS = {"Slice": (1, 2, 3, 4), "Split": (1,)}


def _static_slices(model: onnx.ModelProto, image: str) -> None:
    """Slice and Split operands computed at run time from tensor shapes (torch's chunk) made constants where they do
    not depend on the batch: evaluated from the shapes shape inference finds at batch 1 and at batch 2, and kept
    only where both give the same value."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    made_by = g.producers(graph)
    wanted = [(node, k) for node in graph.node if node.op_type in _INDEX_OPERANDS
              for k in _INDEX_OPERANDS[node.op_type] if k < len(node.input) and node.input[k]
              and g.constant_value(graph, node.input[k]) is None]
    if not wanted:
        return
    probes = _at_batches_one_and_two(model, image)
    constants = {t.name: t for t in graph.initializer}
    for node, k in wanted:
        results = []
        for values in probes:
            nodes, feeds, stack, seen, ok = [], {}, [node.input[k]], set(), True
            while stack and ok:
                name = stack.pop()
                if name in seen or name in constants:
                    continue
                seen.add(name)
                maker = made_by.get(name)
                if maker is None:
                    ok = False
                elif maker.op_type == "Shape":
                    dims = g.dims(values[maker.input[0]]) if maker.input[0] in values else []
                    if not dims or not all(isinstance(d, int) for d in dims):
                        ok = False
                    else:
                        feeds[name] = np.array(dims, np.int64)
                        if maker.attribute:   # start/end
                            attrs = {a.name: a.i for a in maker.attribute}
                            feeds[name] = feeds[name][attrs.get("start", 0):attrs.get("end", len(dims))]
                else:
                    nodes.append(maker)
                    stack.extend(i for i in maker.input if i)
            if not ok:
                break
            sub = helper.make_graph(list(reversed(_ordered(graph, nodes))), "index",
                                    [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in feeds],
                                    [helper.make_tensor_value_info(node.input[k], TensorProto.UNDEFINED, None)],
                                    [constants[i] for n in nodes for i in n.input if i in constants])
            try:
                results.append(ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import))
                               .run(None, feeds)[0])
            except Exception:   # an operand the reference runtime cannot evaluate stays as it is
                break
        if len(results) == 2 and np.array_equal(results[0], results[1]):
            name = f"{node.input[k]}::static"
            if name not in constants:
                constants[name] = numpy_helper.from_array(np.asarray(results[0]), name)
                graph.initializer.append(constants[name])
            node.input[k] = name


def _ordered(graph: onnx.GraphProto, nodes: list) -> list:
    """`nodes` in reverse topological order of the graph."""
    chosen = {id(n) for n in nodes}
    return [n for n in reversed(graph.node) if id(n) in chosen]


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


def _without_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy whose initializers above FOLD_LIMIT elements are typed graph inputs, and those weights by name.

    Built field by field so the large tensors are never copied (and the caller's model never touched).
    """
    large = {t.name: t for t in model.graph.initializer if np.prod(t.dims, dtype=np.int64) > g.FOLD_LIMIT}
    skeleton = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                               producer_version=model.producer_version, domain=model.domain,
                               model_version=model.model_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph, source = skeleton.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.initializer.extend(t for t in source.initializer if t.name not in large)
    listed = {i.name for i in graph.input}
    graph.input.extend(helper.make_tensor_value_info(name, t.data_type, list(t.dims))
                       for name, t in large.items() if name not in listed)
    return skeleton, large


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
        shape = name + "::shape"
        zeros.append(helper.make_node("Shape", [name], [shape]))
        zeros.append(helper.make_node("ConstantOfShape", [shape], [delta],
                                      value=numpy_helper.from_array(np.zeros(1, np.float32))))
    return zeros


def _seed_nodes(model: onnx.ModelProto, info: ModelInfo, seed: str, seeds: bool = False) -> list[onnx.NodeProto]:
    """onnx-ad's seed (the output's shape and a trailing seed axis) from class_weights: a classifier's (N, C, 1)
    with all-zero rows replaced by the one-hot of argmax(logits); any other output's weights as they are, the
    targets axis T of `seeds` moved last."""
    p = "seed::"
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
