"""Shape-derived operands made constants, on a copy without its weights: what onnx-ad needs read as constants.

Exports compute some operands at run time from tensor shapes: torch's interpolate(size=x.shape[2:]) gives Resize
run-time `sizes`, flatten(2) gives Reshape a run-time shape once the batch is dynamic, chunk() gives Slice and Split
run-time bounds. onnx-ad differentiates those ops only with constant extents, and shape inference stops at a Slice
it cannot read. Each pass keeps only what does not depend on the batch (checked at batch 1 and 2).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import graph as g

__all__ = ["make_static", "without_weights", "resizes", "reshapes", "slices"]


def make_static(model: onnx.ModelProto, image: str) -> onnx.ModelProto:
    """Every pass below, in place on `model` (image: its input's name); returns it."""
    resizes(model)
    reshapes(model, image)
    slices(model, image)
    return model


def resizes(model: onnx.ModelProto) -> None:
    """Resizes whose `sizes` are computed at run time (torch's interpolate(size=x.shape[2:])) given constant scales
    instead, where shape inference knows both spatial sizes: onnx-ad differentiates a Resize only with constant
    extents. The same resize: ONNX Runtime maps coordinates by out/in either way, and floor(in * out/in) = out is
    checked."""
    graph = model.graph
    resizes = [n for n in graph.node if n.op_type == "Resize" and len(n.input) > 3 and n.input[3]
               and g.constant_value(graph, n.input[3]) is None]
    if not resizes:
        return
    values = g.infer(model)
    for node in resizes:
        shape_in = g.dims(values[node.input[0]]) if node.input[0] in values else []
        shape_out = g.dims(values[node.output[0]]) if node.output[0] in values else []
        known = shape_in[1:] + shape_out[1:]
        if len(shape_in) != 4 or len(shape_out) != 4 or not all(isinstance(d, int) for d in known):
            continue
        scales = np.array([1.0, 1.0] + [o / i for i, o in zip(shape_in[2:], shape_out[2:])], np.float32)
        if any(int(np.floor(np.float32(i) * s)) != o for i, o, s in zip(shape_in[2:], shape_out[2:], scales[2:])):
            continue
        name = node.output[0] + "::camserve::scales"
        graph.initializer.append(numpy_helper.from_array(scales, name))
        if not node.input[1]:
            node.input[1] = ""
        node.input[2] = name
        del node.input[3]


def reshapes(model: onnx.ModelProto, image: str) -> None:
    """Reshapes whose target shape is computed at run time from the batch (flatten(2) in a detector head, once the
    batch is dynamic) given a constant one, -1 for the batch, where shape inference at batch 1 and 2 finds the
    output (batch, static dims...): onnx-ad's Concat and Split adjoints need the extents they cut along."""
    graph = model.graph
    reshapes = [n for n in graph.node if n.op_type == "Reshape" and g.constant_value(graph, n.input[1]) is None]
    if not reshapes:
        return
    shapes = [{n.output[0]: g.dims(values[n.output[0]]) if n.output[0] in values else [] for n in reshapes}
              for values in _at_batches_one_and_two(model, image)]
    probes = None
    for node in reshapes:
        one, two = shapes[0][node.output[0]], shapes[1][node.output[0]]
        if not one or not all(isinstance(d, int) for d in one + two) or one[0] != 1 or two[0] != 2 \
                or one[1:] != two[1:]:
            # shape inference lost the output (paddle2onnx computes the target through int32 Casts): the target
            # itself evaluated at batch 1 and 2, kept as (-1, rest) where only its first entry is the batch
            probes = probes or _at_batches_one_and_two(model, image)
            values = _evaluated(model, node, 1, probes)
            if values is not None and len(values[0]) == len(values[1]) >= 1 and values[0][0] == 1 \
                    and values[1][0] == 2 and np.array_equal(values[0][1:], values[1][1:]) and min(values[0]) > 0:
                _set(model, node, 1, np.array([-1, *values[0][1:]], np.int64))
            continue
        name = node.output[0] + "::camserve::shape"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, *one[1:]], np.int64), name))
        node.input[1] = name


def _at_batches_one_and_two(model: onnx.ModelProto, image: str) -> list[dict]:
    """What shape inference finds with the batch fixed at 1 and at 2: an extent equal in both does not depend on
    the batch. A graph whose batch is already fixed has one answer, given twice."""
    value = next(i for i in model.graph.input if i.name == image)
    if isinstance(g.dims(value)[0], int):
        return [g.infer(model)] * 2
    found = []
    for batch in (1, 2):
        probe = g.copy(model)
        g.set_input_dims(probe, image, {0: batch}, only_symbolic=False)
        found.append(g.infer(probe))
    return found


# the integer operands onnx-ad needs constant: Slice's starts/ends/axes/steps, Split's split
_INDEX_OPERANDS = {"Slice": (1, 2, 3, 4), "Split": (1,)}


def slices(model: onnx.ModelProto, image: str) -> None:
    """Slice and Split operands computed at run time from tensor shapes (torch's chunk) made constants where they do
    not depend on the batch: evaluated from the shapes shape inference finds at batch 1 and at batch 2, and kept
    only where both give the same value. In rounds: shape inference stops at a Slice whose bounds it cannot read,
    so each C2f block's chunk becomes readable only once the one before it is constant."""
    graph = model.graph
    while True:
        wanted = [(node, k) for node in graph.node if node.op_type in _INDEX_OPERANDS
                  for k in _INDEX_OPERANDS[node.op_type] if k < len(node.input) and node.input[k]
                  and g.constant_value(graph, node.input[k]) is None]
        if not wanted:
            return
        probes = _at_batches_one_and_two(model, image)
        if not sum(_made_static(model, node, k, probes) for node, k in wanted):
            return


def _made_static(model: onnx.ModelProto, node: onnx.NodeProto, k: int, probes: list[dict]) -> bool:
    """Operand k of `node` replaced by a constant if the shapes in both probes give it, and the same value."""
    results = _evaluated(model, node, k, probes)
    if results is None or not np.array_equal(results[0], results[1]):
        return False
    _set(model, node, k, np.asarray(results[0]))
    return True


def _set(model: onnx.ModelProto, node: onnx.NodeProto, k: int, value: np.ndarray) -> None:
    name = f"{node.input[k]}::static"
    if name not in {t.name for t in model.graph.initializer}:
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    node.input[k] = name


def _evaluated(model: onnx.ModelProto, node: onnx.NodeProto, k: int, probes: list[dict]) -> list | None:
    """Operand k of `node` evaluated (onnx's reference runtime) in each probe, where it is computed from shapes the
    probe knows; None where it is not."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    made_by = g.producers(graph)
    constants = {t.name: t for t in graph.initializer}
    results = []
    for values in probes:
        nodes, feeds, stack, seen = [], {}, [node.input[k]], set()
        while stack:
            name = stack.pop()
            if name in seen or name in constants:
                continue
            seen.add(name)
            maker = made_by.get(name)
            if maker is None:
                return None
            if maker.op_type == "Shape":
                dims = g.dims(values[maker.input[0]]) if maker.input[0] in values else []
                if not dims or not all(isinstance(d, int) for d in dims):
                    return None
                attrs = {a.name: a.i for a in maker.attribute}   # start/end
                feeds[name] = np.array(dims, np.int64)[attrs.get("start", 0):attrs.get("end", len(dims))]
            else:
                nodes.append(maker)
                stack.extend(i for i in maker.input if i)
        sub = helper.make_graph(list(reversed(_ordered(graph, nodes))), "index",
                                [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in feeds],
                                [helper.make_tensor_value_info(node.input[k], TensorProto.UNDEFINED, None)],
                                [constants[i] for n in nodes for i in n.input if i in constants])
        try:
            results.append(ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import))
                           .run(None, feeds)[0])
        except Exception:   # an operand the reference runtime cannot evaluate stays as it is
            return None
    return results


def _ordered(graph: onnx.GraphProto, nodes: list) -> list:
    """`nodes` in reverse topological order of the graph."""
    chosen = {id(n) for n in nodes}
    return [n for n in reversed(graph.node) if id(n) in chosen]


def without_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
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
