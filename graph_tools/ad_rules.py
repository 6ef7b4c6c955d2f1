"""Overrides of onnx-ad 0.3.0 reverse rules so image graphs differentiate with a dynamic batch axis.

onnx-ad's Conv and pooling adjoints ask for a fully static input shape, but they only read the
channel count and the spatial size; a symbolic batch (which every served graph has) made them
refuse. These versions read just what they use. Importing this module installs them.
"""
from __future__ import annotations

import numpy as np
from onnx_ad import rules
from onnx_ad._build import UnsupportedOperator


def _known(ctx, name: str, axes: slice, what: str) -> list[int]:
    shape = ctx.shapes.shape(name)
    part = None if shape is None else list(shape[axes])
    if part is None or any(d is None for d in part):
        raise UnsupportedOperator(f"{what} needs the {'channel' if axes.start == 1 else 'spatial'} "
                                  f"dims of {name!r} declared")
    return part


@rules.reverse_rule("Conv")
def _conv_reverse(ctx, node, grads):
    attrs, spatial = rules._conv_attributes(ctx, node)
    x, w, y = node.input[0], node.input[1], node.output[0]
    seeded = ctx.full(grads[0], y)
    contributions = [None]
    if ctx.asked_for(x):
        transposed = dict(attrs, output_shape=_known(ctx, x, slice(2, None), "Conv reverse"))
        transposed.pop("kernel_shape", None)
        folded = rules._fold_seed_into_batch(ctx, seeded, y)
        contributions[0] = rules._unfold_batch_into_seed(
            ctx, ctx.b.op("ConvTranspose", [folded, w], stem="a_conv", **transposed), x, ctx.rank(x))
    contributions.append(rules._conv_weight_adjoint(ctx, node, attrs, spatial, seeded))
    if len(node.input) > 2 and node.input[2] and ctx.asked_for(node.input[2]):
        outside = [a for a in range(ctx.rank(y)) if a != 1]
        contributions.append(ctx.reshape_like(ctx.reduce_sum(seeded, outside, keepdims=0), node.input[2]))
    return contributions


def _ones_kernel(ctx, node, attrs):
    channels = _known(ctx, node.input[0], slice(1, 2), node.op_type)[0]
    kernel = [channels, 1] + attrs["kernel_shape"]
    return ctx.b.constant(np.ones(kernel), ctx.dtype(node.input[0]), kernel), channels


def _window_spread(ctx, node, attrs, value):
    ones, channels = _ones_kernel(ctx, node, attrs)
    x, y = node.input[0], node.output[0]
    transposed = dict(attrs, output_shape=_known(ctx, x, slice(2, None), node.op_type))
    transposed.pop("kernel_shape")
    folded = rules._fold_seed_into_batch(ctx, value, y)
    spread = ctx.b.op("ConvTranspose", [folded, ones], group=channels, stem="window_spread", **transposed)
    return rules._unfold_batch_into_seed(ctx, spread, x, ctx.rank(x))


rules._ones_kernel = _ones_kernel
rules._window_spread = _window_spread
