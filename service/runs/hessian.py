"""The Hessian gradient run kind: d score / d activation and its Hessian-vector product with the activation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camserve import graph_tools as gt

from .base import Context, Result, Run, WithHessian, channels_first, top1


@dataclass(frozen=True)
class HessianGradients(Run):
    """One run of a forward-over-backward graph at the target layers: each layer's activations A, the gradient
    g = d s / dA of s = rows . logits and H A = (d2 s / dA2) A, the second derivative along every path from A
    to the logits (ShapleyCAM). Each layer's product is taken alone: no cross terms between layers."""
    gradients = True
    cost_class = "forward"

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        size, base = ctx.differentiable(x)   # a static-size copy per input size where H and W are symbolic
        key = ("hessian", tuple(layers), *size)
        build = lambda: gt.add_hessian(base(), layers, ctx.info)  # noqa: E731
        out = channels_first(ctx.info, ctx.runtime.run(key, build, {ctx.info.input_name: ctx.model.feed(x),
                                                                 gt.CLASS_WEIGHTS: rows}))
        logits = out[gt.LOGITS]
        rows = top1(rows, logits)
        return Result(logits, rows, [
            WithHessian(name=name, acts=out[name], grads=out[gt.GRAD_PREFIX + name], hvp=out[gt.HVP_PREFIX + name],
                        class_weights=rows, logits=logits) for name in layers])
