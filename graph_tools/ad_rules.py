"""Camserve's onnx-ad 0.3.0 reverse rules, scoped to its own differentiations: nothing in onnx-ad is replaced.

onnx-ad's Conv and pooling adjoints ask for a fully static input shape, but they only read the
channel count and the spatial size; a symbolic batch (which every served graph has) made them
refuse. These versions read just what they use, and broadcasting adjoints of batch tensors skip
run-time axis arithmetic.

How they are scoped: they are in force only inside `reverse` below, which add_gradients calls.
onnx-ad has no parameter for a rule table (its pass reads the module global REVERSE, its pool
rules the globals _ones_kernel/_window_spread, and onnx_ad.reverse builds a plain Context), so
`reverse` runs onnx-ad's own functions re-bound to copies of their module namespaces that name
our table, helpers and tape (_rebound). Nothing of onnx-ad is ever assigned to: every other
caller, in any thread and at the same time, gets stock onnx-ad, and no lock is needed. The
weights the caller stripped out of the graph travel on the tape (_ImageContext.stripped).
"""
from __future__ import annotations

import functools
import types

import numpy as np
import onnx
import onnx_ad
from onnx import numpy_helper
from onnx_ad import _passes, rules
from onnx_ad._build import Context, UnsupportedOperator

from .quant import STE_PREFIX

# The operations whose stock rules walk a subgraph body with _passes.reverse_nodes (onnx_ad/control.py).
_SUBGRAPH_OPS = ("If", "Scan", "Loop")


def reverse(model: onnx.ModelProto, stripped: dict[str, onnx.TensorProto], inputs: list[str],
            outputs: list[str]) -> onnx.ModelProto:
    """onnx_ad.reverse(model, inputs, outputs, layout="onnx"), differentiated with camserve's rules.

    `stripped` holds the large weights the caller turned into graph inputs of `model`, by name:
    the Conv rule reads them to emit its adjoint as a Conv.
    """
    table = {}
    reverse_nodes = _rebound(_passes.reverse_nodes, REVERSE=table)
    table.update(_rule_table(reverse_nodes))
    tape = functools.partial(_ImageContext, stripped=stripped)
    driver = _rebound(onnx_ad.reverse, Context=tape, reverse_nodes=reverse_nodes)
    return driver(model, inputs=inputs, outputs=outputs, layout="onnx")


def _rule_table(reverse_nodes) -> dict:
    """onnx-ad's reverse rules as registered now, with ours in their place.

    Built per call, so it holds whatever onnx-ad's registry holds at that moment and nothing of it
    outlives the call. The subgraph rules walk their bodies with `reverse_nodes`, i.e. over this
    same table, so a Conv inside an If body gets our rule too.
    """
    table = dict(rules.REVERSE)
    table["Conv"] = _conv_reverse
    # the stock pool rules, reading our window helpers (_average_count builds a ones kernel too)
    average_count = _rebound(rules._average_count, _ones_kernel=_ones_kernel)
    table["AveragePool"] = _rebound(rules.REVERSE["AveragePool"], _average_count=average_count,
                                    _window_spread=_window_spread)
    table["LpPool"] = _rebound(rules.REVERSE["LpPool"], _window_spread=_window_spread)
    table["Resize"] = table["Upsample"] = functools.partial(_resize_reverse, rules.REVERSE["Resize"])
    table["Slice"] = functools.partial(_slice_reverse, rules.REVERSE["Slice"])
    table["Round"] = functools.partial(_round_reverse, rules.REVERSE["Round"])
    table["Clip"] = functools.partial(_clip_reverse, rules.REVERSE["Clip"])
    # its scale and zero point, held constant under the straight-through estimator (quant.integer_ops_as_float)
    table["DynamicQuantizeLinear"] = rules.REVERSE["QuantizeLinear"]
    for op in _SUBGRAPH_OPS:
        table[op] = _rebound(rules.REVERSE[op], reverse_nodes=reverse_nodes)
    return table


def _round_reverse(stock, ctx, node, grads):
    """The straight-through estimator for the rounding of a quantisation rewritten as float (quant.STE_PREFIX):
    the gradient passes unchanged; any other Round keeps its zero derivative."""
    if node.name.startswith(STE_PREFIX):
        return [grads[0]]
    return stock(ctx, node, grads)


def _clip_reverse(stock, ctx, node, grads):
    """A quantisation's saturation under the straight estimator (named STE_PREFIX...::pass) passes the gradient
    unchanged; every other Clip (the clipped estimator's included) zeroes it outside its range."""
    if node.name.startswith(STE_PREFIX) and node.name.endswith("::pass"):
        return [grads[0]] + [None] * (len(node.input) - 1)
    return stock(ctx, node, grads)


def _rebound(fn: types.FunctionType, **names) -> types.FunctionType:
    """`fn`'s own code, looking up `names` in a copy of its module's globals that holds ours instead.

    A function reads globals from the dict it was made with, so this is onnx-ad's code unchanged
    with our table or helper in reach, and its module untouched. Each name must be one `fn` reads:
    if a new onnx-ad stopped reading it, the override would silently do nothing, so it fails here.
    """
    unread = [name for name in names if name not in fn.__code__.co_names or name not in fn.__globals__]
    if unread:
        raise RuntimeError(f"onnx-ad's {fn.__module__}.{fn.__qualname__} no longer reads {unread}; "
                           "camserve's rule overrides need updating for this onnx-ad version")
    clone = types.FunctionType(fn.__code__, dict(fn.__globals__, **names), fn.__name__, fn.__defaults__,
                               fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    clone.__qualname__ = fn.__qualname__
    return clone


class _ImageContext(Context):
    """onnx-ad's tape, carrying the stripped weights and a batch-aware unbroadcast."""

    def __init__(self, model, stripped: dict[str, onnx.TensorProto]):
        super().__init__(model)
        self.stripped = stripped

    def child(self):
        # onnx-ad makes a subgraph scope with object.__new__(Context); keep it ours, or rules inside
        # an If/Scan/Loop body would lose the weights and the unbroadcast below
        scope = super().child()
        scope.__class__ = _ImageContext
        scope.stripped = self.stripped
        return scope

    def unbroadcast(self, value, source_rank, target):
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
        return super().unbroadcast(value, source_rank, target)


def _known(ctx, name: str, axes: slice, what: str) -> list[int]:
    shape = ctx.shapes.shape(name)
    part = None if shape is None else list(shape[axes])
    if part is None or any(d is None for d in part):
        raise UnsupportedOperator(f"{what} needs the {'channel' if axes.start == 1 else 'spatial'} "
                                  f"dims of {name!r} declared")
    return part


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
    if weight is None and node.input[1] in ctx.stripped:
        weight = numpy_helper.to_array(ctx.stripped[node.input[1]])
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


def _resize_reverse(stock, ctx, node, grads):
    """onnx-ad's own Resize adjoint, which asks for the declared extent of every axis, on a tape that reads a
    symbolic batch as 1: a batch is never resized (a Resize that scales it is refused), and onnx-ad only
    compares the batch's extents, never uses them."""
    rank = ctx.rank(node.input[0])
    scales, sizes, _ = rules._resize_extents(ctx, node, rank)
    if (scales is not None and scales[0] != 1.0) or sizes is not None:
        return stock(ctx, node, grads)
    return stock(_BatchAsOne(ctx), node, grads)


def _slice_reverse(stock, ctx, node, grads):
    """onnx-ad's own Slice adjoint (zero padding), which asks for the declared extent of every axis, on a tape that
    reads a symbolic batch as 1 where the slice leaves the batch axis alone (its padding there is 0 either way)."""
    starts, _, axes, _ = rules._slice_bounds(ctx, node)
    rank = ctx.rank(node.input[0])
    touched = list(range(len(starts))) if axes is None and starts is not None else \
        [a % rank for a in axes] if axes is not None else [0]
    return stock(ctx if 0 in touched else _BatchAsOne(ctx), node, grads)


class _BatchAsOne:
    """A view of onnx-ad's tape whose static shapes read a symbolic leading (batch) dim as 1."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.shapes = _BatchAsOneShapes(ctx.shapes)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class _BatchAsOneShapes:
    def __init__(self, shapes):
        self._shapes = shapes

    def static(self, name):
        shape = self._shapes.shape(name)
        if not shape or any(d is None for d in shape[1:]):
            return self._shapes.static(name)
        return [1 if shape[0] is None else shape[0], *shape[1:]]

    def __getattr__(self, name):
        return getattr(self._shapes, name)


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
