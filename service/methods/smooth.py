"""Smooth Grad-CAM++ with torchcam's semantics: gradient moments averaged over noisy copies of the input."""
from __future__ import annotations

import numpy as np

from .base import Evidence, Needs, method, weighted_sum


@method("smoothgradcam++", needs=Needs(gradients=True, noisy_copies=True),
        options={"samples": 4, "std": 0.3, "seed": 0, "noise": None}, cost="N x (1 forward + 1 backward), one batch")
def smooth_gradcam_plusplus(ev: Evidence) -> np.ndarray:
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


def noisy_copies(x: np.ndarray, samples: int, std: float, seed: int, noise) -> np.ndarray:
    """(S+1)*N images: the clean batch first, then S noisy copies of it (normalised-input space)."""
    if noise is None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        if not isinstance(std, (int, float)) or not 0 <= std < float("inf"):
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
        noise = np.random.default_rng(seed).normal(0.0, std, size=(samples, *x.shape))
    noise = np.asarray(noise, np.float32)
    if noise.ndim != x.ndim + 1 or noise.shape[1:] != x.shape or len(noise) < 1 or not np.isfinite(noise).all():
        raise ValueError(f"noise must be finite, with shape (samples, {', '.join(map(str, x.shape))}); "
                         f"got {noise.shape}")
    return np.concatenate([x[None], x[None] + noise]).reshape(-1, *x.shape[1:]).astype(np.float32)
