"""Forward run kinds: the layers' activations from one plain run (Eigen-CAM, RandomCAM), with the classifier (CAM)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ALL_KINDS, Activations, Classified, Context, Result, Run, single_layer, top1


@dataclass(frozen=True)
class Forward(Run):
    """One forward exposing the target layers."""
    cost_class = "forward"
    kinds = ALL_KINDS
    targeted = False

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        out = ctx.forward(layers, x)
        logits = out[ctx.info.logits]
        rows = top1(rows, logits)
        return Result(logits, rows, [Activations(name=name, acts=out[name], class_weights=rows, logits=logits)
                                     for name in layers])


@dataclass(frozen=True)
class Classifier(Forward):
    """One forward at the one layer a GAP + FC classifier reads, with that classifier's weights."""
    kinds = ("classifier",)
    targeted = True

    def layers(self, model, requested: list[str] | None) -> list[str]:
        layers = single_layer("CAM", model.target_layers(requested))
        model.classifier(layers[0])   # a GraphError now where the layer feeds no such classifier
        return layers

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        result = super().__call__(ctx, x, rows, layers, options)
        result.evidence = [Classified(name=ev.name, acts=ev.acts, class_weights=ev.class_weights, logits=ev.logits,
                                      classifier=ctx.model.classifier(ev.name)) for ev in result.evidence]
        return result
