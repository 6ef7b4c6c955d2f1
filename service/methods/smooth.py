"""Smooth Grad-CAM++ with torchcam's semantics: gradient moments averaged over noisy copies of the input."""
from __future__ import annotations

import numpy as np

from ..runs import NoisyCopies, NoisyGradients
from .base import method, weighted_sum


@method("smoothgradcam++", run=NoisyCopies(), cost="N x (1 forward + 1 backward), one batch")
def smooth_gradcam_plusplus(ev: NoisyGradients) -> np.ndarray:
    """Smooth Grad-CAM++: alpha from the mean 2nd/3rd gradient powers over noisy inputs (torchcam 0.5).

    Like torchcam, the clean activations enter alpha's denominator while the pixel weights and the
    final weighted sum use the gradients and activations of the last noisy copy.
    """
    clean, noisy = ev.acts[0], ev.acts[1:]
    grads = ev.grads[1:]
    squares = grads * grads
    g2 = squares.mean(axis=0)
    g3 = (squares * grads).mean(axis=0)
    spatial = (g3 * clean).sum(axis=(2, 3), keepdims=True)
    alpha = g2 / (2 * g2 + spatial + 1e-8)
    weights = (alpha * np.maximum(grads[-1], 0)).sum(axis=(2, 3))
    return weighted_sum(noisy[-1], weights)

