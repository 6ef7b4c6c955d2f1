"""QuantizeLinear -> DequantizeLinear pairs on activations (a QDQ int8 model's) rewritten as the same arithmetic in
float, with the straight-through estimator for its rounding: the gradient graphs of a quantised model.

ONNX's QuantizeLinear is saturate(round(x / scale) + zero_point) (round half to even) and DequantizeLinear is
(q - zero_point) * scale, so the float chain Clip(Round(x / s) + z, qmin, qmax) - z) * s computes the same values.
Its derivative is a straight-through estimator: Round passes the gradient unchanged (STE_PREFIX names those
Round nodes; ad_rules gives them that rule). The saturation either passes it too ("straight", the default) or
zeroes it outside the quantisation range ("clipped", quantisation-aware training's estimator and the quantised
model's own local derivative). Clipped maps go blank wherever the inputs explained saturate ranges calibrated on
other data (measured with random calibration data: MobileNetV2's maps correlate 0.44 with the float model's, a
pretrained MobileNetV2's are all zero; straight: 0.99 and 0.88). Without this, the integer between the pair
carries no derivative and every gradient map of a QDQ model is zero.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from . import graph as g

__all__ = ["STE_PREFIX", "STE", "fake_quantized", "has_qdq", "has_integer_ops", "integer_ops_as_float"]

STE_PREFIX = "camserve::ste::"
_RANGES = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255),
           onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


INTEGER_OPS = ("ConvInteger", "MatMulInteger")


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def has_integer_ops(model: onnx.ModelProto) -> bool:
    return any(n.op_type in INTEGER_OPS for n in model.graph.node)


def integer_ops_as_float(model: onnx.ModelProto, ste: str = "straight") -> onnx.ModelProto:
    """A dynamically quantised model's (onnxruntime.quantization.quantize_dynamic) ConvInteger / MatMulInteger,
    changed in place into the same products in float, differentiable: the activation that DynamicQuantizeLinear
    quantised becomes u = Clip(Round(x / scale) + zero, 0, 255) - zero (the integers the op reads, with the
    straight-through estimator of `fake_quantized`; DynamicQuantizeLinear's scale and zero point are held
    constant), the weight w_q - w_zero, and the op a Conv / MatMul of the two whose float output keeps the integer
    op's name (the Cast and scale Mul after it then act on it unchanged). Products of 8-bit integers summed in
    float32 are exact up to 2^24, so the forward matches the integer op to float rounding beyond that."""
    graph = model.graph
    made_by = {o: n for n in graph.node for o in n.output}
    added, removed = [], set()
    for node in graph.node:
        if node.op_type not in INTEGER_OPS or len(node.input) < 2:
            continue
        quantiser = made_by.get(node.input[0])
        if quantiser is None or quantiser.op_type != "DynamicQuantizeLinear":
            continue
        x, scale, zero = quantiser.input[0], quantiser.output[1], quantiser.output[2]
        if len(node.input) > 2 and node.input[2] and node.input[2] != zero:
            continue
        prefix = f"{STE_PREFIX}{node.output[0]}::"
        added.append(helper.make_node("Cast", [zero], [prefix + "zero"], to=onnx.TensorProto.FLOAT))
        q = _quantised(x, scale, prefix + "zero", 0, 255, prefix, ste, added)   # DynamicQuantizeLinear is uint8
        added += [helper.make_node("Sub", [q, prefix + "zero"], [prefix + "u"]),
                  helper.make_node("Cast", [node.input[1]], [prefix + "w"], to=onnx.TensorProto.FLOAT)]
        weight = prefix + "w"
        if len(node.input) > 3 and node.input[3]:
            added += [helper.make_node("Cast", [node.input[3]], [prefix + "w_zero"], to=onnx.TensorProto.FLOAT),
                      helper.make_node("Sub", [weight, prefix + "w_zero"], [prefix + "w_unit"])]
            weight = prefix + "w_unit"
        op = "Conv" if node.op_type == "ConvInteger" else "MatMul"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if op == "Conv" else {}
        added.append(helper.make_node(op, [prefix + "u", weight], [node.output[0]], **attrs))
        removed.add(id(node))
    if removed:
        kept = [n for n in graph.node if id(n) not in removed]
        del graph.node[:]
        graph.node.extend(kept + added)
        g.toposort(graph)
    return model


STE = ("straight", "clipped")


def fake_quantized(model: onnx.ModelProto, tensors: dict[str, onnx.TensorProto] | None = None,
                   ste: str = "straight") -> onnx.ModelProto:
    """The model (changed in place) with every QuantizeLinear whose input is an activation, and the
    DequantizeLinear nodes reading it, replaced by the float chain above (each DequantizeLinear's output name
    kept). `tensors`: initializers moved out of the graph (static.without_weights), where zero points may be.
    ste: "clipped" zeroes the gradient where the value saturates the quantisation range (QAT's estimator, the
    quantised model's own derivative); "straight" passes it there too (the float model's, where calibration
    ranges are narrower than the inputs explained)."""
    if ste not in STE:
        raise ValueError(f"ste must be one of {STE}, got {ste!r}")
    graph = model.graph
    known = {t.name: t for t in graph.initializer} | dict(tensors or {})
    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute
                 and n.attribute[0].name == "value"}
    known |= constants
    users = g.consumers(graph)
    ranks = _ranks(model)
    replaced, added = set(), []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in known:
            continue   # a weight's quantisation: constant, nothing to differentiate
        readers = users.get(node.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            continue
        zero = known.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        low, high = _RANGES.get(zero.data_type if zero is not None else onnx.TensorProto.UINT8, (None, None))
        if low is None or any(_attr(n, "block_size", 0) for n in [node, *readers]):
            continue
        rank = ranks.get(node.input[0])
        prefix = f"{STE_PREFIX}{node.output[0]}::"
        scale = _broadcast(node, node.input[1], rank, prefix + "scale", added)
        point = _broadcast(node, node.input[2], rank, prefix + "zero", added, cast=True) if zero is not None else None
        if scale is None or (zero is not None and point is None):
            continue
        q = _quantised(node.input[0], scale, point, low, high, prefix, ste, added)
        for k, reader in enumerate(readers):
            at = f"{prefix}dq{k}::"
            value = q
            if len(reader.input) > 2 and reader.input[2]:
                zp = _broadcast(reader, reader.input[2], rank, at + "zero", added, cast=True)
                if zp is None:
                    break
                added.append(helper.make_node("Sub", [q, zp], [at + "unit"]))
                value = at + "unit"
            dq_scale = _broadcast(reader, reader.input[1], rank, at + "scale", added)
            if dq_scale is None:
                break
            added.append(helper.make_node("Mul", [value, dq_scale], [reader.output[0]]))
            replaced.add(id(reader))
        else:
            replaced.add(id(node))
    kept = [n for n in graph.node if id(n) not in replaced]
    del graph.node[:]
    graph.node.extend(kept + added)
    g.toposort(graph)
    return model


def _quantised(x: str, scale: str, zero: str | None, low: int, high: int, prefix: str, ste: str,
               added: list) -> str:
    """Clip(Round(x / scale) + zero, low, high) in float (QuantizeLinear's values), appended to `added`: its Round
    named for the straight-through rule, its Clip for the estimator `ste` (ad_rules reads both names)."""
    added += [helper.make_node("Div", [x, scale], [prefix + "div"]),
              helper.make_node("Round", [prefix + "div"], [prefix + "round"], name=prefix + "round")]
    shifted = prefix + "round"
    if zero is not None:
        added.append(helper.make_node("Add", [shifted, zero], [prefix + "shifted"]))
        shifted = prefix + "shifted"
    added += [g.constant_node(prefix + "low", np.array(low, np.float32)),
              g.constant_node(prefix + "high", np.array(high, np.float32)),
              helper.make_node("Clip", [shifted, prefix + "low", prefix + "high"], [prefix + "q"],
                               name=prefix + ("clip" if ste == "clipped" else "pass"))]
    return prefix + "q"


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _broadcast(node: onnx.NodeProto, name: str, rank: int | None, out: str, added: list,
               cast: bool = False) -> str | None:
    """`name` (a scale or zero point) as float, shaped [1, .., C, .., 1] along the node's axis to broadcast against
    the quantised tensor (a scalar reshaped so broadcasts as it did); None where that tensor's rank is unknown."""
    if rank is None:
        return None
    value = out + "::float"
    added.append(helper.make_node("Cast", [name], [value], to=onnx.TensorProto.FLOAT) if cast else
                 helper.make_node("Identity", [name], [value]))
    target = [1] * rank
    target[_attr(node, "axis", 1) % rank] = -1
    added += [g.constant_node(out + "::shape", np.array(target, np.int64)),
              helper.make_node("Reshape", [value, out + "::shape"], [out])]
    return out


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        values = g.infer(model)
    except Exception:   # shape inference is an aid here, never a requirement
        return {}
    return {name: len(g.dims(v)) for name, v in values.items() if v.type.tensor_type.HasField("shape")}



# -- QOperator (QLinearConv, ...) as QDQ -----------------------------------------------------------------------------
# the integer ops of onnxruntime.quantization's QOperator format: op -> (the float op, where the output's scale and
# zero point are among the inputs)
_QLINEAR = {"QLinearConv": ("Conv", 6), "QLinearAdd": ("Add", 6), "QLinearMul": ("Mul", 6),
            "QLinearGlobalAveragePool": ("GlobalAveragePool", 3), "QGemm": ("Gemm", 7)}
# ops that move quantised integers without changing their scale
_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity")


def has_qoperator(model: onnx.ModelProto) -> bool:
    return any(n.op_type in _QLINEAR for n in model.graph.node)


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A QOperator-format int8 model (QLinearConv, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm), changed
    in place into the equivalent QDQ graph: each integer op becomes DequantizeLinear on its inputs, the float op,
    and QuantizeLinear to its output's scale (an int32 bias dequantised at input scale x weight scale, as the
    format defines it), and integer pass-through ops (MaxPool, Flatten, ...) are wrapped the same way, which is
    exact (they commute with a monotone dequantisation). The result has float activations to explain and the QDQ
    pairs `fake_quantized` differentiates; every original tensor name is kept."""
    graph = model.graph
    scales: dict[str, tuple[str, str]] = {}   # integer tensor -> (scale, zero point)
    nodes, made = [], {}

    def dq(name: str, scale: str, zero: str | None, axis: int | None = None) -> str:
        """`name` dequantised, once (its float tensor is `name::camserve::float`, a stable layer name)."""
        key = (name, scale, zero, axis)
        if key not in made:
            made[key] = f"{name}::camserve::float" + (f"{len(made)}" if any(k[0] == name for k in made) else "")
            inputs = [name, scale] + ([zero] if zero else [])
            axes = {"axis": axis} if axis is not None else {}
            nodes.append(helper.make_node("DequantizeLinear", inputs, [made[key]], **axes))
        return made[key]

    def q(value: str, out: str, scale: str, zero: str) -> None:
        nodes.append(helper.make_node("QuantizeLinear", [value, scale, zero], [out]))
        scales[out] = (scale, zero)

    known = {t.name: t for t in graph.initializer}

    def per_channel(name: str) -> int | None:
        tensor = known.get(name)
        return 0 if tensor is not None and len(tensor.dims) == 1 and tensor.dims[0] > 1 else None

    for node in graph.node:
        ins = list(node.input) + [""] * 9
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "QuantizeLinear":
            scales[node.output[0]] = (ins[1], ins[2])
            nodes.append(node)
        elif node.op_type in _QLINEAR:
            op, at = _QLINEAR[node.op_type]
            if node.op_type == "QLinearConv":
                x, w = dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5], per_channel(ins[4]))
                inputs = [x, w]
                if ins[8]:
                    bias_scale = f"{node.output[0]}::camserve::bias_scale"
                    nodes.append(helper.make_node("Mul", [ins[1], ins[4]], [bias_scale]))
                    inputs.append(dq(ins[8], bias_scale, None, per_channel(ins[4])))
            elif node.op_type == "QGemm":
                inputs = [dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5], per_channel(ins[4]))]
                if ins[6]:
                    bias_scale = f"{node.output[0]}::camserve::bias_scale"
                    nodes.append(helper.make_node("Mul", [ins[1], ins[4]], [bias_scale]))
                    inputs.append(dq(ins[6], bias_scale, None, per_channel(ins[4])))
            elif node.op_type == "QLinearGlobalAveragePool":
                if attrs.pop("channels_last", 0):
                    raise ValueError("channels-last QLinearGlobalAveragePool")
                inputs = [dq(ins[0], ins[1], ins[2])]
            else:   # QLinearAdd, QLinearMul
                inputs = [dq(ins[0], ins[1], ins[2]), dq(ins[3], ins[4], ins[5])]
            if node.op_type in ("QLinearAdd", "QLinearMul"):
                attrs = {}
            if node.op_type == "QGemm" and not ins[at]:   # no output scale: QGemm's float output
                nodes.append(helper.make_node(op, inputs, [node.output[0]], **attrs))
                continue
            value = f"{node.output[0]}::camserve::value"
            nodes.append(helper.make_node(op, inputs, [value], **attrs))
            q(value, node.output[0], ins[at], ins[at + 1])
        elif node.op_type in _PASS_THROUGH and node.input and node.input[0] in scales:
            scale, zero = scales[node.input[0]]
            wrapped = onnx.NodeProto()
            wrapped.CopyFrom(node)
            wrapped.input[0] = dq(node.input[0], scale, zero)
            wrapped.output[0] = f"{node.output[0]}::camserve::value"
            nodes.append(wrapped)
            q(wrapped.output[0], node.output[0], scale, zero)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model
