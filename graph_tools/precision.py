"""Float16 graphs made float32: the copy every rewrite of an fp16 export starts from."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["has_float16", "to_float32"]

_TYPE_ATTRIBUTES = ("to", "dtype")   # Cast's target, and the dtype of EyeLike / Random* / ...


def has_float16(model: onnx.ModelProto) -> bool:
    """Whether any input, output, weight or constant of the graph is float16 (an onnxconverter-common export,
    with or without keep_io_types)."""
    graph = model.graph
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in values):
        return True
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        return True
    return any(a.name in _TYPE_ATTRIBUTES and a.i == TensorProto.FLOAT16 for n in graph.node for a in n.attribute)


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model (changed in place) with every float16 weight, constant, Cast target, dtype attribute and declared
    value type made float32: the same network at float32 precision, its weights the float16 values exactly (a
    float16 number is a float32 number), so maps and scores differ from the fp16 run only by its rounding."""
    graph = model.graph
    for k, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            graph.initializer[k].CopyFrom(_float32(tensor))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _TYPE_ATTRIBUTES and attribute.type == onnx.AttributeProto.INT \
                    and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT16:
                attribute.t.CopyFrom(_float32(attribute.t))
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    _drop_float_casts(model)
    return model


def _drop_float_casts(model: onnx.ModelProto) -> None:
    """Bypass the Casts the fp16 conversion put at the graph's edges and around blocked ops, now float32 to
    float32: they would otherwise list the cast image as a layer. A Cast that makes a graph output stays, as an
    Identity."""
    graph = model.graph
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.initializer[:]   # types only: weights are not needed to infer them
    probe.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    typed = onnx.shape_inference.infer_shapes(probe).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.value_info) + list(typed.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    outputs = {o.name for o in graph.output}
    bypass = {}
    for node in list(graph.node):
        if node.op_type != "Cast" or types.get(node.input[0]) != TensorProto.FLOAT:
            continue
        if not any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute):
            continue
        if node.output[0] in outputs:
            node.op_type = "Identity"
            del node.attribute[:]
        else:
            bypass[node.output[0]] = bypass.get(node.input[0], node.input[0])
            graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [bypass.get(i, i) for i in node.input]


def _float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
