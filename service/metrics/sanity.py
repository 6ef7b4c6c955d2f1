"""The sanity check's similarity measures: how much a map still resembles itself after randomisation."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from .adcc import pearson_rows


def spearman(maps: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per image Spearman rank correlation of two (N, H, W) map stacks (average ranks for ties).
    A constant map has no ranks: 1 when both maps are the same constant (nothing changed), else 0.
    Maps here are already non-negative, so Adebayo et al.'s absolute-value variant would give the
    same number."""
    flat, other = maps.reshape(len(maps), -1), others.reshape(len(others), -1)
    rho, defined = pearson_rows(rankdata(flat, axis=1), rankdata(other, axis=1))
    return np.where(defined, rho, np.where((flat == other).all(axis=1), 1.0, 0.0))


def ssim(maps: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per image structural similarity of two [0, 1] map stacks."""
    from skimage.metrics import structural_similarity
    return np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(maps, others)])
