"""The sanity check's similarity measures: how much a map still resembles itself after randomisation."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def spearman(maps: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per image Spearman rank correlation of two (N, H, W) map stacks (average ranks for ties);
    0 where either map is constant. Maps here are already non-negative, so Adebayo et al.'s
    absolute-value variant would give the same number."""
    a = rankdata(maps.reshape(len(maps), -1), axis=1)
    b = rankdata(others.reshape(len(others), -1), axis=1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(1) / denominator, 0.0)


def ssim(maps: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per image structural similarity of two [0, 1] map stacks."""
    from skimage.metrics import structural_similarity
    return np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(maps, others)])
