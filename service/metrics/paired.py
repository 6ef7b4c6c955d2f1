"""Paired comparisons of two methods on the same images: a paired bootstrap of the per-image differences,
and Holm's step-down correction over a family of such tests.

The bootstrap resamples images (rows) with replacement, the same rows for both methods, and recomputes the
statistic of each; the p-value is the two-sided test of "no difference" by the shifted bootstrap
distribution (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, section 16.4): the share of
resampled differences at least as far from the observed one as the observed one is from zero.
Holm (1979), https://www.jstor.org/stable/4615733, controls the family-wise error rate at alpha for any
dependence between the tests.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["paired_bootstrap", "holm", "verdict"]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                     resamples: int = 10000, confidence: float = 0.95, seed: int = 0) -> dict:
    """statistic(a) - statistic(b) over paired rows, with its percentile interval and two-sided p-value.

    a, b: (N, ...) per-image values of two methods on the same N images, row i the same image in both.
    Rows where either holds NaN (no ground truth) are left out of both. The statistic reduces rows to a
    number (the mean, or ADCC of the averaged components). Returns {"a", "b", "difference", "low", "high",
    "p", "n"}; with fewer than two rows the interval and p are None.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a.reshape(len(a), -1)).any(1) | np.isnan(b.reshape(len(b), -1)).any(1))
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return {"a": None, "b": None, "difference": None, "low": None, "high": None, "p": None, "n": 0}
    sa, sb = float(statistic(a)), float(statistic(b))
    observed = sa - sb
    result = {"a": sa, "b": sb, "difference": observed, "low": None, "high": None, "p": None, "n": n}
    if n < 2:
        return result
    picks = np.random.default_rng(seed).integers(0, n, (resamples, n))
    spread = np.array([statistic(a[p]) - statistic(b[p]) for p in picks])
    tail = 100 * (1 - confidence) / 2
    # shifted to the null (mean difference 0): how often chance alone moves the difference as far as observed
    extreme = np.abs(spread - observed) >= abs(observed) - 1e-12
    result.update(low=float(np.percentile(spread, tail)), high=float(np.percentile(spread, 100 - tail)),
                  p=float(max(extreme.mean(), 1 / resamples)))
    return result


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the given order: the k-th smallest of m is multiplied by (m - k + 1), then
    made non-decreasing along the sorted order and capped at 1. None (no test) stays None and does not count."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def verdict(difference: float | None, p_adjusted: float | None, higher_is_better: bool, alpha: float = 0.05) -> str:
    """"holds" (the claimed winner is significantly better), "does not hold" (significantly worse), or
    "not significant" (no test, or adjusted p >= alpha), for the claim "a is better than b"."""
    if difference is None or p_adjusted is None or p_adjusted >= alpha or difference == 0:
        return "not significant"
    return "holds" if (difference > 0) == higher_is_better else "does not hold"
