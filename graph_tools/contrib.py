"""ONNX Runtime's fused contrib ops (in files saved after its graph optimisation) rewritten as standard ops, and a
clear refusal of the ones that cannot be."""
from __future__ import annotations

import collections

import onnx
from onnx import helper

from .errors import GraphError

__all__ = ["contrib_ops", "unfuse"]

_STANDARD = ("", "ai.onnx")
# FusedConv / FusedGemm's `activation` attribute -> the standard op and how its activation_params map to attributes
_ACTIVATIONS = {"Relu": (), "Sigmoid": (), "Tanh": (), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
                "Elu": ("alpha",), "Selu": ("alpha", "gamma"), "Softplus": (), "Clip": ("min", "max")}
_SAVE_AT = ("save the model at ORT_ENABLE_BASIC (SessionOptions.graph_optimization_level, with "
            "optimized_model_filepath) or explain the file you exported; basic-level files hold standard ops only")


def contrib_ops(model: onnx.ModelProto) -> collections.Counter:
    """(domain, op) -> count of the graph's nodes outside the standard ONNX domain."""
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node if n.domain not in _STANDARD)


def unfuse(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model (changed in place) with com.microsoft FusedConv and FusedGemm split into Conv / Gemm, the optional
    sum input's Add, and the activation, keeping every original tensor name (the activation makes the fused op's
    output). Any other op outside the standard domain is refused, naming the ops and how to save the file instead
    (NCHWc ops are laid out for one CPU's vector width: no standard graph equals them without their layout)."""
    graph = model.graph
    if not contrib_ops(model):
        return model
    nodes = []
    for node in graph.node:
        if node.domain == "com.microsoft" and node.op_type in ("FusedConv", "FusedGemm"):
            nodes += _split(node)
        else:
            nodes.append(node)
    left = collections.Counter((n.domain, n.op_type) for n in nodes if n.domain not in _STANDARD)
    if left:
        found = ", ".join(f"{domain}.{op} x{count}" for (domain, op), count in sorted(left.items()))
        if any(op.startswith(("QLinear", "QGemm", "QAttention")) for _, op in left):
            raise GraphError(f"the graph holds QOperator int8 ops camserve does not rewrite ({found}); quantise the "
                             "float model in QDQ format instead (onnxruntime.quantization.quantize_static with "
                             "quant_format=QuantFormat.QDQ), which camserve explains")
        raise GraphError(f"the graph holds ONNX Runtime contrib ops that camserve cannot rewrite as standard ops "
                         f"({found}): it was saved after ONNX Runtime's graph optimisation at the 'all' level; "
                         + _SAVE_AT)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _split(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    activation = attrs.pop("activation", b"")
    activation = activation.decode() if isinstance(activation, bytes) else activation
    params = list(attrs.pop("activation_params", []))            # FusedConv's
    for name in ("activation_alpha", "activation_beta", "activation_gamma"):   # FusedGemm's
        if name in attrs:
            params.append(attrs.pop(name))
    out = node.output[0]
    base = "Conv" if node.op_type == "FusedConv" else "Gemm"
    inputs = list(node.input[:3])
    z = node.input[3] if node.op_type == "FusedConv" and len(node.input) > 3 and node.input[3] else None
    stem = f"{out}::camserve::{base.lower()}"
    result = [helper.make_node(base, inputs, [stem if activation or z else out], name=node.name, **attrs)]
    current = result[0].output[0]
    if z:
        summed = f"{out}::camserve::sum" if activation else out
        result.append(helper.make_node("Add", [current, z], [summed]))
        current = summed
    if activation:
        if activation not in _ACTIVATIONS:
            raise GraphError(f"{node.op_type} {node.name!r} fuses activation {activation!r}, which camserve does not "
                             f"know; " + _SAVE_AT)
        names = _ACTIVATIONS[activation]
        if activation == "Clip":   # opset 11+: min and max are inputs
            low, high = f"{out}::camserve::min", f"{out}::camserve::max"
            result += [helper.make_node("Constant", [], [low], value=helper.make_tensor(low, 1, [], [params[0]])),
                       helper.make_node("Constant", [], [high], value=helper.make_tensor(high, 1, [], [params[1]])),
                       helper.make_node("Clip", [current, low, high], [out])]
        else:
            result.append(helper.make_node(activation, [current], [out], **dict(zip(names, params))))
    return result
