"""Promote intermediate tensors to graph outputs (ONNX Runtime only returns declared outputs)."""
from __future__ import annotations

import onnx
from onnx import helper

from . import graph as g


def expose(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy that also outputs `tensors`, in the order given, after the existing outputs."""
    result = g.copy(model)
    graph = result.graph
    g.check_produced(graph, tensors, inputs_too=True)
    present = {o.name for o in graph.output}
    elem = _elem_types(result)
    for name in tensors:
        if name in present:
            continue
        graph.output.append(helper.make_tensor_value_info(name, elem.get(name, onnx.TensorProto.FLOAT), None))
        present.add(name)
    return result


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        values = g.infer(model)
    except Exception:  # shape inference is a nicety here; float is the right guess for activations
        return {}
    return {name: v.type.tensor_type.elem_type for name, v in values.items()}
