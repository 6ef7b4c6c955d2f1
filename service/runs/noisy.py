"""The noisy-copies run kind: gradients of the clean batch and S noisy copies of it in one run (Smooth Grad-CAM++)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camserve import graph_tools as gt

from ..errors import OptionError
from ..numeric import count
from .base import Context, NoisyGradients, Result, Run, top1


def noisy_copies(x: np.ndarray, samples: int, std: float, seed: int, noise) -> np.ndarray:
    """(S+1)*N images: the clean batch first, then S noisy copies of it (normalised-input space)."""
    if noise is None:
        samples = count(samples, "samples")
        if not isinstance(std, (int, float)) or not 0 <= std < float("inf"):
            raise OptionError(f"std must be a finite number >= 0, got {std!r}")
        noise = np.random.default_rng(seed).normal(0.0, std, size=(samples, *x.shape))
    noise = np.asarray(noise, np.float32)
    if noise.ndim != x.ndim + 1 or noise.shape[1:] != x.shape or len(noise) < 1 or not np.isfinite(noise).all():
        raise OptionError(f"noise must be finite, with shape (samples, {', '.join(map(str, x.shape))}); "
                          f"got {noise.shape}")
    return np.concatenate([x[None], x[None] + noise]).reshape(-1, *x.shape[1:]).astype(np.float32)


@dataclass(frozen=True)
class NoisyCopies(Run):
    """Activations and gradients of the clean images and of `samples` noisy copies (N(0, std^2) from `seed`,
    or a given `noise` (samples, N, C, H, W)), stacked on a leading copies axis."""
    gradients = True
    batchable = False    # the noise is drawn for the whole batch: a neighbour would change an image's copies
    cost_class = "few_forwards"
    options = {"samples": 4, "std": 0.3, "seed": 0, "noise": None}

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        if not rows.any(axis=1).all():   # the clean image's top-1, not each copy's
            rows = top1(rows, ctx.logits(x))
        batch = noisy_copies(x, options["samples"], options["std"], options["seed"], options["noise"])
        copies = len(batch) // len(x)
        out = ctx.gradients(layers, batch, np.tile(rows, (copies, 1)))
        out = {k: v.reshape(copies, len(x), *v.shape[1:]) for k, v in out.items()}
        logits = out[ctx.info.logits][0]
        return Result(logits, rows, [NoisyGradients(name=name, acts=out[name], grads=out[gt.GRAD_PREFIX + name],
                                                    class_weights=rows, logits=logits) for name in layers])
