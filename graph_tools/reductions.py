"""Per-layer reductions appended to a gradient graph: a run returns (N, h, w) maps and (N,) scores per layer
instead of the (N, K, h, w) activations and gradients, so nothing large leaves the session.

`add_plusplus_maps` reduces every conv block (z, A, b) of a graph made by `add_gradients` (with the blocks' A
and z among its layers) to what Integrative CAM fuses (docs/methods/integrative.md):

    map   = sum_k alpha_k ReLU(g_k) A_k + sum_k b_k dS/dz_k,
    alpha = g^2 / (2 g^2 + max(r sum_ij A_k(i,j), 0) g^3 + eps)
    share = sum ReLU(g A) / max(sum |g A|, tiny)   (the layer's positive share of gradient x activation)
    mass  = sum |g A|                              (zero: no activation the target's gradient reaches)

r is a per-image input (1 for the exponential score). alpha ReLU(g) is `methods.gradient.plusplus_alpha_grads`
with r S clamped at 0, divided through by g^2 to save a pass.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import graph as g
from .gradients import GRAD_PREFIX, LOGITS

__all__ = ["MAP_PREFIX", "SHARE_PREFIX", "MASS_PREFIX", "RATIO", "add_plusplus_maps"]

MAP_PREFIX = "camserve::map::"
SHARE_PREFIX = "camserve::share::"
MASS_PREFIX = "camserve::mass::"
RATIO = "camserve::ratio"


def add_plusplus_maps(model: onnx.ModelProto, blocks: list[tuple[str, str, np.ndarray]],
                      channels_last: set[str] = frozenset(), eps: float = 1e-6) -> onnx.ModelProto:
    """model (changed in place and returned): an add_gradients graph whose layers hold every block's A and z.

    blocks: (z, A, b) per block (graph_tools.conv_blocks). channels_last: the blocks whose A and z are (N, h, w, K).
    Adds the input RATIO (N,) and makes the outputs LOGITS then, per block in order, MAP_PREFIX + A (N, h, w),
    SHARE_PREFIX + A (N,) and MASS_PREFIX + A (N,); everything else is pruned away.
    """
    graph = model.graph
    nodes = [g.constant_node(RATIO + "::shape", np.array([-1, 1, 1, 1], np.int64)),
             helper.make_node("Reshape", [RATIO, RATIO + "::shape"], [RATIO + "::4d"]),
             g.constant_node(RATIO + "::two", np.array(2.0, np.float32)),
             g.constant_node(RATIO + "::eps", np.array(eps, np.float32)),
             g.constant_node(RATIO + "::tiny", np.array(np.finfo(np.float32).tiny, np.float32)),
             g.constant_node(RATIO + "::half", np.array(0.5, np.float32))]
    outputs = [o for o in graph.output if o.name == LOGITS]
    for z, a, bias in blocks:
        last = a in channels_last
        channel, spatial = (3, [1, 2]) if last else (1, [2, 3])
        p = f"camserve::pp::{a}::"
        grad, pre_grad = GRAD_PREFIX + a, GRAD_PREFIX + z
        nodes += g.reduce_node("ReduceSum", model, a, p + "sum", spatial)                     # sum_ij A (N, K)
        nodes += [
            helper.make_node("Mul", [p + "sum", RATIO + "::4d"], [p + "rsum_signed"]),
            # r S clamped at 0: a linear block's channel sums (or softmax's r) can be negative, and then the
            # denominator crosses 0 where g = -2 / (r S) (docs/methods/integrative.md, choice 5)
            helper.make_node("Relu", [p + "rsum_signed"], [p + "rsum"]),
            # alpha ReLU(g) = g^3 / (rS g^3 + 2 g^2 + eps) = g / (rS g + 2 + eps / g^2): 6 passes, not 8
            # (g = 0: eps / 0 = inf and 0 / inf = 0, as the g^3 form gives)
            helper.make_node("Relu", [grad], [p + "g"]),
            helper.make_node("Mul", [p + "g", p + "g"], [p + "g2"]),
            helper.make_node("Div", [RATIO + "::eps", p + "g2"], [p + "eps_g2"]),
            helper.make_node("Mul", [p + "rsum", p + "g"], [p + "den0"]),
            helper.make_node("Sum", [p + "den0", RATIO + "::two", p + "eps_g2"], [p + "den"]),   # one pass
            helper.make_node("Div", [p + "g", p + "den"], [p + "alpha_g"]),
            helper.make_node("Mul", [p + "alpha_g", a], [p + "evidence"]),
            helper.make_node("Mul", [grad, a], [p + "ga"]),
        ]
        nodes += g.reduce_node("ReduceSum", model, p + "evidence", p + "map_a", [channel], keepdims=0)
        if last:   # sum_k b_k dS/dz_k as a product and a sum over the last axis
            nodes += [g.constant_node(p + "bias", bias.reshape(1, 1, 1, -1).astype(np.float32)),
                      helper.make_node("Mul", [pre_grad, p + "bias"], [p + "bias_term"])]
            nodes += g.reduce_node("ReduceSum", model, p + "bias_term", p + "map_b", [channel], keepdims=0)
        else:      # ... as a 1 x 1 convolution to one channel: one kernel, no (N, K, h, w) temporary
            nodes += [g.constant_node(p + "bias", bias.reshape(1, -1, 1, 1).astype(np.float32)),
                      helper.make_node("Conv", [pre_grad, p + "bias"], [p + "bias_map"])]
            nodes += g.reduce_node("ReduceSum", model, p + "bias_map", p + "map_b", [1], keepdims=0)
        nodes.append(helper.make_node("Add", [p + "map_a", p + "map_b"], [MAP_PREFIX + a]))
        # sum ReLU(gA) = (sum |gA| + sum gA) / 2: two reductions of gA, no ReLU or |.| temporaries
        nodes += g.reduce_node("ReduceL1", model, p + "ga", MASS_PREFIX + a, [1, 2, 3], keepdims=0)
        nodes += g.reduce_node("ReduceSum", model, p + "ga", p + "signed", [1, 2, 3], keepdims=0)
        nodes += [helper.make_node("Add", [MASS_PREFIX + a, p + "signed"], [p + "twice_pos"]),
                  helper.make_node("Max", [MASS_PREFIX + a, RATIO + "::tiny"], [p + "total_safe"]),
                  helper.make_node("Div", [p + "twice_pos", p + "total_safe"], [p + "twice_share"]),
                  helper.make_node("Mul", [p + "twice_share", RATIO + "::half"], [SHARE_PREFIX + a])]
        outputs += [helper.make_tensor_value_info(MAP_PREFIX + a, TensorProto.FLOAT, ["N", None, None]),
                    helper.make_tensor_value_info(SHARE_PREFIX + a, TensorProto.FLOAT, ["N"]),
                    helper.make_tensor_value_info(MASS_PREFIX + a, TensorProto.FLOAT, ["N"])]
    graph.input.append(helper.make_tensor_value_info(RATIO, TensorProto.FLOAT, ["N"]))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    g.toposort(graph)
    return g.prune(model)
