"""Dataset-level numbers: means with bootstrap 95% intervals, and ADCC from averaged components."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .adcc import adcc


def interval(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, confidence: float = 0.95,
             resamples: int = 2000, seed: int = 0) -> dict:
    """{"mean", "low", "high"}: the statistic over the rows of `values` and its percentile-bootstrap
    interval (rows resampled with replacement). Rows holding NaN (no ground truth) are left out;
    nothing left gives nulls."""
    values = np.asarray(values, np.float64)
    rows = values.reshape(len(values), -1)
    values = values[~np.isnan(rows).any(axis=1)]
    if len(values) == 0:
        return {"mean": None, "low": None, "high": None}
    picks = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    spread = np.array([statistic(values[p]) for p in picks])
    tail = 100 * (1 - confidence) / 2
    return {"mean": float(statistic(values)), "low": float(np.percentile(spread, tail)),
            "high": float(np.percentile(spread, 100 - tail))}


def adcc_of_means(components: np.ndarray) -> float:
    """components (N, 3) = per image (average drop, coherency, complexity) in % -> ADCC of their means,
    the aggregation that reproduces the published tables."""
    drop, coh, compl = np.asarray(components, np.float64).mean(axis=0)
    return float(adcc(drop, coh, compl))


def summarise(per_image: dict[str, np.ndarray]) -> dict:
    """Every metric's mean and interval; ADCC from the averaged components (which reproduces the published
    tables), the mean of per-image ADCC (Poppi's code) beside it as adcc_per_image."""
    summary = {name: interval(values) for name, values in per_image.items()}
    summary["adcc_per_image"] = summary["adcc"]
    components = np.stack([per_image["average_drop"], per_image["coherency"], per_image["complexity"]], axis=1)
    summary["adcc"] = interval(components, adcc_of_means)
    return summary
