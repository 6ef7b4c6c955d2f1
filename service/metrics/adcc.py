"""ADCC (Poppi et al.): Coherency, Complexity and their harmonic mean with Average Drop."""
from __future__ import annotations

import numpy as np


def pearson_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of each row pair of two (N, ...) stacks, flattened, and whether it is
    defined (neither row constant); undefined rows hold 0."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    defined = denominator > 0
    return np.where(defined, (a * b).sum(1) / np.where(defined, denominator, 1), 0.0), defined


def coherency(maps: np.ndarray, remaps: np.ndarray) -> np.ndarray:
    """Per image, in %: (Pearson(L(x), L(x * L(x))) + 1) / 2 over the flattened maps; a constant map
    has no correlation and scores 0 (Poppi's NaN -> 0)."""
    pearson, defined = pearson_rows(maps, remaps)
    return np.where(defined, 100.0 * (pearson + 1) / 2, 0.0)


def complexity(maps: np.ndarray) -> np.ndarray:
    """Per image, in %: the L1 norm of the [0, 1] map over its pixel count. Lower is better."""
    return 100.0 * np.abs(maps).reshape(len(maps), -1).mean(1, dtype=np.float64)


def adcc(drop, coh, compl) -> np.ndarray:
    """3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AvgDrop)), all in %. Applied to averaged
    components it reproduces the published tables; applied per image it is Poppi's code. A zero
    term (a perfectly bad component) makes the harmonic mean 0."""
    terms = [np.maximum(np.asarray(v, np.float64), 0) / 100 for v in (coh, 100 - np.asarray(compl),
                                                                        100 - np.asarray(drop))]
    with np.errstate(divide="ignore"):
        return 300.0 / sum(1 / t for t in terms)   # 1/0 = inf -> 0


def arcc(coh, compl, road_combined) -> np.ndarray:
    """pytorch-grad-cam's ARCC, in %: ADCC's harmonic mean with ROAD in place of Average Drop,
    3 / (1/Coherency + 1/(1 - Complexity) + 1/clip(2 ROAD, 0, 1)), its 1e-8 guards included.
    Coherency and Complexity in %, ROAD (combined, in probability units) as `road.combined` gives it."""
    coh, compl = np.asarray(coh, np.float64) / 100, np.asarray(compl, np.float64) / 100
    road = np.clip(2 * np.asarray(road_combined, np.float64), 0, 1)
    return 300.0 / (1 / (coh + 1e-8) + 1 / ((1 - compl) + 1e-8) + 1 / (road + 1e-8))
