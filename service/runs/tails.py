"""Tail run kinds: a forward, then the network after the layer on perturbed copies of its activations
(Ablation-CAM, FD-CAM: channels switched; Recipro-CAM: single-position mosaics)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Context, Result, Run, probed, top1
from .probe import Probe


def _fed(ctx: Context, layers: list[str]) -> list[str]:
    """Every tensor the layers' tail graphs read (a GraphError where no tail can be cut at a layer)."""
    return [t for name in layers for t in ctx.model.tail_inputs(name)]


def _tail_result(ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], gradients: bool) -> Result:
    fed = _fed(ctx, layers)
    if gradients:
        out = ctx.gradients(layers, x, rows)
        missing = [name for name in dict.fromkeys(fed) if name not in out]
        if missing:   # a gradient run shows the layers; the tail also reads tensors around them
            out.update(ctx.forward(missing, x))
    else:
        out = ctx.forward(list(dict.fromkeys(layers + fed)), x)
    logits = out[ctx.info.logits]
    rows = top1(rows, logits)
    return Result(logits, rows, [
        probed(name, out, rows, logits, Probe(ctx, x, rows, name, {t: out[t] for t in ctx.model.tail_inputs(name)}),
               gradients) for name in layers])


@dataclass(frozen=True)
class ChannelTail(Run):
    """A forward (with gradients: a gradient run), then `ev.probe.channels`: the tail on channel-masked copies."""
    with_gradients: bool = False
    cost_class = "few_forwards"

    @property
    def gradients(self) -> bool:
        return self.with_gradients

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        return _tail_result(ctx, x, rows, layers, self.with_gradients)


@dataclass(frozen=True)
class MosaicTail(Run):
    """A forward, then `ev.probe.mosaic`: the tail on copies built from single positions of the feature map."""
    cost_class = "few_forwards"

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        return _tail_result(ctx, x, rows, layers, False)
