"""Overrides of onnx-ad 0.3.0 reverse rules so image graphs differentiate with a dynamic batch axis.

onnx-ad's Conv and pooling adjoints ask for a fully static input shape, but they only read the
channel count and the spatial size; a symbolic batch (which every served graph has) made them
refuse. These versions read just what they use, and broadcasting adjoints of batch tensors skip
run-time axis arithmetic. Importing this module installs them.
"""
from __future__ import annotations

import contextvars

import numpy as np
from onnx import numpy_helper
from onnx_ad import rules
from onnx_ad._build import Context, UnsupportedOperator


# Large weights add_gradients moved out of the graph while it is being differentiated, by name.
STRIPPED_WEIGHTS: contextvars.ContextVar[dict] = contextvars.ContextVar("stripped_weights", default={})


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
        folded = rules._fold_seed_into_batch(ctx, seeded, y)
        adjoint = _adjoint_as_conv(ctx, node, attrs, folded)
        if adjoint is None:
            transposed = dict(attrs, output_shape=_known(ctx, x, slice(2, None), "Conv reverse"))
            transposed.pop("kernel_shape", None)
            adjoint = ctx.b.op("ConvTranspose", [folded, w], stem="a_conv", **transposed)
        contributions[0] = rules._unfold_batch_into_seed(ctx, adjoint, x, ctx.rank(x))
    contributions.append(rules._conv_weight_adjoint(ctx, node, attrs, spatial, seeded))
    if len(node.input) > 2 and node.input[2] and ctx.asked_for(node.input[2]):
        outside = [a for a in range(ctx.rank(y)) if a != 1]
        contributions.append(ctx.reshape_like(ctx.reduce_sum(seeded, outside, keepdims=0), node.input[2]))
    return contributions


def _adjoint_as_conv(ctx, node, attrs, folded):
    """The input adjoint of a stride-1, undilated Conv with a constant weight, as a Conv.

    It is the full correlation with the spatially flipped kernel, in and out channels swapped
    within each group, and pads k-1-p. ONNX Runtime runs Conv in its blocked layout, about twice
    as fast as the ConvTranspose the generic rule emits. None where that does not apply.
    """
    weight = ctx.values.get(node.input[1])
    if weight is None and node.input[1] in STRIPPED_WEIGHTS.get():
        weight = numpy_helper.to_array(STRIPPED_WEIGHTS.get()[node.input[1]])
    if weight is None or any(s != 1 for s in attrs["strides"]) or any(d != 1 for d in attrs["dilations"]):
        return None
    kernel = list(weight.shape[2:])
    n, pads = len(kernel), attrs["pads"]
    flipped_pads = [k - 1 - p for k, p in zip(kernel + kernel, pads)]
    if min(flipped_pads) < 0:
        return None
    group = attrs["group"]
    out_channels, in_per_group = weight.shape[:2]
    grouped = weight.reshape(group, out_channels // group, in_per_group, *kernel)
    swapped = grouped.transpose(0, 2, 1, *range(3, 3 + n)).reshape(group * in_per_group, out_channels // group, *kernel)
    flipped = np.ascontiguousarray(swapped[(slice(None), slice(None)) + (slice(None, None, -1),) * n])
    return ctx.b.op("Conv", [folded, ctx.b.constant(flipped, ctx.dtype(node.input[1]), flipped.shape)],
                    pads=flipped_pads, group=group, kernel_shape=kernel, strides=[1] * n,
                    dilations=[1] * n, stem="a_conv")


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


_unbroadcast = Context.unbroadcast


def _unbroadcast_batch(self, value, source_rank, target):
    """Sum an adjoint back to `target`'s shape without run-time axis arithmetic for batch tensors.

    onnx-ad computes the broadcast axes at run time whenever a shape has a symbolic dim, so every
    residual Add got Shape/Equal/NonZero/ReduceSum nodes that reduce nothing but copy the tensor.
    In an image graph the only symbolic leading dim is the batch, which is never broadcast, so a
    target whose other dims are static needs only its static 1-dims reduced.
    """
    shape = self.shapes.shape(target)
    if shape and len(shape) == source_rank and shape[0] is None and None not in shape[1:]:
        axes = [i for i, d in enumerate(shape) if i and d == 1]
        return self.reduce_sum(value, axes, keepdims=1) if axes else value
    return _unbroadcast(self, value, source_rank, target)


Context.unbroadcast = _unbroadcast_batch
