"""Model parameter randomisation for the sanity check (Adebayo et al.): Conv/Gemm/MatMul weights redrawn."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import GraphError
from .graph import copy, initializers

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def parameter_layers(model: onnx.ModelProto) -> list[str]:
    """Output tensor names of the nodes whose weights are initializers, in graph order (input first)."""
    inits = initializers(model.graph)
    return [node.output[0] for node in model.graph.node
            if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in inits]


def _fan_in(node: onnx.NodeProto, weight: np.ndarray) -> int:
    if node.op_type in ("Conv", "ConvTranspose"):
        return int(np.prod(weight.shape[1:]))
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return int(weight.shape[1] if node.op_type == "Gemm" and trans_b else weight.shape[0])


def randomize(model: onnx.ModelProto, layers: list[str], seed: int = 42) -> onnx.ModelProto:
    """A copy with the weights and biases of the nodes producing `layers` redrawn from PyTorch's default
    initialisation (Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both).

    Each layer draws from its own stream (seed, position in graph order), so a cascade's stage k
    holds exactly the draws of stage k - 1 plus one more layer.
    """
    order = {name: i for i, name in enumerate(parameter_layers(model))}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise GraphError(f"{unknown[0]!r} is not the output of a Conv/Gemm/MatMul with weights; "
                         f"candidates: {list(order)[-3:]} ...")
    out = copy(model)
    inits = initializers(out.graph)
    producing = {node.output[0]: node for node in out.graph.node}
    for name in layers:
        node = producing[name]
        rng = np.random.default_rng([seed, order[name]])
        weight = numpy_helper.to_array(inits[node.input[1]])
        bound = 1.0 / np.sqrt(max(_fan_in(node, weight), 1))
        params = node.input[1:2] if node.op_type == "MatMul" else node.input[1:3]
        for tensor_name in (n for n in params if n in inits):
            old = numpy_helper.to_array(inits[tensor_name])
            fresh = rng.uniform(-bound, bound, old.shape).astype(old.dtype)
            inits[tensor_name].CopyFrom(numpy_helper.from_array(fresh, tensor_name))
    return out


def cascade(model: onnx.ModelProto, stages: int) -> list[tuple[str, list[str]]]:
    """The cascading randomisation's checkpoints, top (logits) layer first: (the deepest layer
    randomised so far, every layer randomised at that stage), `stages` points spread over the
    weighted layers (all of them when stages >= their count)."""
    top_down = parameter_layers(model)[::-1]
    if not top_down:
        raise GraphError("the model has no Conv/Gemm/MatMul weights to randomise")
    count = min(stages, len(top_down))
    ends = np.unique(np.round(np.linspace(1, len(top_down), count)).astype(int))
    return [(top_down[end - 1], top_down[:end]) for end in ends]
