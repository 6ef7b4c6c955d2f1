"""Make a graph's batch axis dynamic, rewriting the Reshape constants a fixed-batch export baked in."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from . import graph as g
from .errors import GraphError
from .model_info import ModelInfo, inspect

BATCH = "N"


def _set_batch(values) -> int | None:
    """Set dim 0 of each value to the symbol N; return the fixed batch it had (None if already dynamic)."""
    fixed = None
    for value in values:
        shape = value.type.tensor_type.shape
        if len(shape.dim) == 0:
            continue
        dim = shape.dim[0]
        if dim.HasField("dim_value"):
            fixed = dim.dim_value
        dim.Clear()
        dim.dim_param = BATCH
    return fixed


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose inputs and outputs take any batch size.

    Reshape targets whose leading entry equals the baked batch, on data computed from the image,
    become 0 ("copy the input's batch"; -1 under allowzero=1, when the target has no -1 yet), which
    stays valid when the constant also holds a -1 elsewhere. A constant shared with other consumers
    is cloned first so only those Reshape shapes change.
    """
    result = g.copy(model)
    graph = result.graph
    inputs = g.real_inputs(graph)
    fixed = _set_batch(inputs)
    fixed = _set_batch(graph.output) or fixed
    del graph.value_info[:]
    if not fixed:
        return result
    from_image = set().union(*(g.descendants(graph, i.name) for i in inputs))
    inits = g.initializers(graph)
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] not in from_image:
            continue
        shape_name = node.input[1]
        value = g.constant_value(graph, shape_name)
        if value is None or value.ndim != 1 or value.size < 2 or value[0] != fixed:
            continue
        allowzero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
        if allowzero and -1 in value:
            continue
        new_value = value.copy()
        new_value[0] = -1 if allowzero else 0
        new_name = f"{shape_name}__dynamic_batch{new_value[0]}"
        if new_name not in inits:
            tensor = numpy_helper.from_array(new_value.astype(np.int64), new_name)
            graph.initializer.append(tensor)
            inits[new_name] = tensor
        node.input[1] = new_name
    return g.prune(result)  # constants that only those Reshapes used are dead now


def fix_spatial_size(model: onnx.ModelProto, height: int, width: int, info: ModelInfo | None = None) -> onnx.ModelProto:
    """A copy whose image input has static height and width (the batch stays as it is).

    Gradient graphs need static spatial sizes (a transposed convolution must know how much output
    to keep), so models exported with symbolic H and W get one such copy per input size.
    """
    info = info or inspect(model)
    result = g.copy(model)
    try:
        g.set_input_dims(result, info.input_name, dict(zip(info.spatial_axes, (height, width))), only_symbolic=False)
    except ValueError as error:
        raise GraphError(str(error)) from error
    del result.graph.value_info[:]
    return result
