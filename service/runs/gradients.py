"""Gradient run kinds: one run of a gradient graph seeded by the class rows (Grad-CAM and kin, FD-CAM's
gradients, Integrative CAM's conv blocks, FullGrad's bias and input gradients)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from camserve import graph_tools as gt

from ..errors import BadRequest
from .base import ALL_KINDS, BiasGradient, Context, ConvBlockMap, Result, Run, WholeNetwork, WithGradients, top1


@dataclass(frozen=True)
class Gradients(Run):
    """d score / d activation at the target layers, with their activations, from one run.

    retarget: rows from the logits of a first forward, fn(logits, rows with top-1 filled in, options) ->
    the rows that seed the gradients (FinerCAM's target-minus-similar-classes).
    """
    retarget: Callable[[np.ndarray, np.ndarray, dict], np.ndarray] | None = None
    gradients = True
    cost_class = "forward"

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("classifier",) if self.retarget is not None else ALL_KINDS

    @property
    def seeds(self) -> bool:
        return self.retarget is None

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        if self.retarget is not None:
            logits = ctx.logits(x)
            rows = np.asarray(self.retarget(logits, top1(rows, logits), options), np.float32)
        out = ctx.gradients(layers, x, rows)
        logits = out[ctx.info.logits]
        rows = top1(rows, logits)
        if rows.ndim == logits.ndim + 1:   # T targets per image: the images' evidence repeated, row n*T + t
            t = rows.shape[1]
            logits, rows = np.repeat(logits, t, axis=0), rows.reshape(-1, *rows.shape[2:])
            return Result(logits, rows, [WithGradients(
                name=name, acts=np.repeat(out[name], t, axis=0), class_weights=rows, logits=logits,
                grads=out[gt.GRAD_PREFIX + name].reshape(-1, *out[name].shape[1:])) for name in layers])
        return Result(logits, rows, [WithGradients(name=name, acts=out[name], grads=out[gt.GRAD_PREFIX + name],
                                                   class_weights=rows, logits=logits) for name in layers])


@dataclass(frozen=True)
class ConvBlocks(Run):
    """Every conv block (or the caller's) reduced inside the gradient graph to its generalised Grad-CAM++ map with
    the bias term, its positive share and sum |g A| (Integrative CAM); no activation or gradient leaves the run.

    ratio: fn(score, logits, rows) -> Grad-CAM++'s r (N,) for the smooth score function the option `score`
    names. The exponential score has r = 1 whatever the logits, so only another score costs a forward first.
    """
    ratio: Callable[[str, np.ndarray, np.ndarray], np.ndarray] | None = None
    gradients = True
    cost_class = "few_forwards"
    target_layers = False
    kinds = ALL_KINDS
    options = {"score": "exp"}

    def layers(self, model, requested: list[str] | None) -> list[str]:
        blocks = model.conv_blocks
        if not requested:
            return list(blocks)
        requested = list(dict.fromkeys(requested))
        unknown = [name for name in requested if name not in blocks]
        if unknown:
            raise BadRequest(f"layer {unknown[0]!r} is not a conv block output; integrative uses conv "
                             f"outputs such as {list(blocks)[-3:]}", "layers")
        return requested

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        blocks = ctx.model.conv_blocks
        score = options.get("score", "exp")
        if score == "exp" or self.ratio is None:
            ratio = np.ones(len(x), np.float32)
        else:
            logits = ctx.logits(x)
            ratio = np.asarray(self.ratio(score, logits, top1(rows, logits)), np.float32)
        out = ctx.plusplus_maps([(blocks[name][0], name, blocks[name][1]) for name in layers], x, rows, ratio)
        logits = out[ctx.info.logits]
        rows = top1(rows, logits)
        return Result(logits, rows, [
            ConvBlockMap(name=name, map=out[gt.MAP_PREFIX + name], share=out[gt.SHARE_PREFIX + name],
                         mass=out[gt.MASS_PREFIX + name], class_weights=rows, logits=logits) for name in layers])


@dataclass(frozen=True)
class FullGradients(Run):
    """The input gradient and the gradient at every biased Conv/BN output, with the biases (FullGrad); the
    caller's layers are ignored and no activation leaves the run."""
    gradients = True
    per_layer = False
    cost_class = "few_forwards"
    target_layers = False
    kinds = ALL_KINDS

    def layers(self, model, requested: list[str] | None) -> list[str]:
        return list(model.bias_terms)

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        out = ctx.gradients(layers, x, rows, input_gradient=True, shown=[])
        logits = out[ctx.info.logits]
        rows = top1(rows, logits)
        bias = ctx.model.bias_terms
        return Result(logits, rows, WholeNetwork(
            x=x, logits=logits, class_weights=rows, input_grad=out[gt.GRAD_PREFIX + ctx.info.input_name],
            layers=[BiasGradient(name=name, grads=out[gt.GRAD_PREFIX + name], bias=bias[name]) for name in layers]))
