"""Map post-processing shared by every method: ReLU, min-max, bilinear resize and multi-layer fusion."""
from __future__ import annotations

import cv2
import numpy as np

from .numeric import minmax, softmax

FUSIONS = ("mean", "max", "adaptive")
TEMPERATURE = 0.1   # adaptive fusion's default: layer evidence lies in [0, 1]; at 1 the softmax is near uniform


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (cv2 INTER_LINEAR) resize of (..., h, w) maps to size = (H, W)."""
    h, w = size
    lead = maps.shape[:-2]
    flat = np.ascontiguousarray(maps.reshape(-1, *maps.shape[-2:]), dtype=np.float32)
    if flat.shape[-2:] == (h, w):
        return flat.reshape(*lead, h, w)
    out = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in flat])
    return out.reshape(*lead, h, w)


def scale(maps: np.ndarray, size: tuple[int, int], relu: bool = True) -> np.ndarray:
    """One layer's raw (N, h, w) map -> (N, H, W) in [0, 1]: ReLU, min-max, then resize."""
    if relu:
        maps = np.maximum(maps, 0)
    return resize(minmax(maps.astype(np.float32)), size)


def fuse(scaled: list[np.ndarray], how: str = "mean", evidence: list[np.ndarray] | None = None,
         temperature: float = TEMPERATURE, tanh: bool = False) -> np.ndarray:
    """Fuse per-layer (N, H, W) maps already in [0, 1]; the result is min-maxed again.

    mean: pytorch-grad-cam's average. max: torchcam's element-wise maximum. adaptive: softmax over
    layers of a per-image evidence score over a temperature (Integrative CAM reconstruction's layer weights).
    tanh: LayerCAM's tanh(2 M / max M) scaling of every layer first (torchcam, gamma = 2).
    """
    if len(scaled) == 1 and not tanh and how in FUSIONS:   # one layer: every fusion is the identity
        return minmax(np.maximum(scaled[0], 0)).astype(np.float32, copy=False)
    stack = np.maximum(np.stack(scaled, axis=1), 0)          # (N, L, H, W)
    if tanh:
        stack = np.tanh(2 * stack / (stack.max(axis=(-2, -1), keepdims=True) + 1e-7))
    if how == "mean":
        fused = stack.mean(axis=1)
    elif how == "max":
        fused = stack.max(axis=1)
    elif how == "adaptive":
        if evidence is None:
            raise ValueError("adaptive fusion needs gradients at every layer")
        weights = softmax(np.stack(evidence, axis=1) / temperature, axis=1)   # (N, L)
        fused = (weights[:, :, None, None] * stack).sum(axis=1)
    else:
        raise ValueError(f"unknown fusion {how!r}; choose one of {FUSIONS}")
    return minmax(fused).astype(np.float32)


def layer_evidence(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Per image, the share of a layer's gradient x activation that is positive, sum ReLU(g A) / sum |g A|, in
    [0, 1]: how consistently the layer's activations support the target. Scale-free, so that layers with large
    activations (early, high-resolution ones) are not favoured; a layer with no gradient scores 0."""
    product = (grads * acts).reshape(len(acts), -1)
    total = np.abs(product).sum(axis=1)
    return np.maximum(product, 0).sum(axis=1) / np.maximum(total, np.finfo(np.float32).tiny)
