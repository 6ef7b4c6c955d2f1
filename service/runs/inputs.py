"""The input-masks run kind: a forward (or gradient run), then `probe.inputs`, the whole network on masked images
(Score-CAM family, Group-CAM; RISE without any layer)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Context, Result, Run, WholeNetwork, probed, top1
from .probe import Probe


@dataclass(frozen=True)
class InputMasks(Run):
    """with_gradients: the layers' gradients too (Group-CAM). per_layer=False: no layer at all, one probe for
    the whole network (RISE)."""
    with_gradients: bool = False
    at_layers: bool = True
    cost_class = "per_channel"

    @property
    def gradients(self) -> bool:
        return self.with_gradients

    @property
    def per_layer(self) -> bool:
        return self.at_layers

    @property
    def target_layers(self) -> bool:
        return self.at_layers

    def layers(self, model, requested: list[str] | None) -> list[str]:
        return super().layers(model, requested) if self.at_layers else []

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        out = ctx.gradients(layers, x, rows) if self.with_gradients else ctx.forward(layers, x)
        logits = out[ctx.info.logits]
        rows = top1(rows, logits)
        if not self.at_layers:
            return Result(logits, rows, WholeNetwork(x=x, logits=logits, class_weights=rows, probe=Probe(ctx, x, rows)))
        probe = Probe(ctx, x, rows)
        return Result(logits, rows, [probed(name, out, rows, logits, probe, self.with_gradients) for name in layers])
