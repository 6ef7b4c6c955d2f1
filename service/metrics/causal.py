"""Deletion and Insertion (RISE): class probability while pixels move, most salient first, between two images."""
from __future__ import annotations

import math

import cv2
import numpy as np

BASELINES = ("zeros", "blur", "mean")


def blur(x: np.ndarray, klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's insertion start: a klen x klen Gaussian (a blurred delta, as RISE's gkern builds it)
    applied per channel with zero padding."""
    from scipy.ndimage import gaussian_filter
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1
    kernel = gaussian_filter(delta, sigma).astype(np.float32)
    out = np.empty_like(x, dtype=np.float32)
    for index in np.ndindex(x.shape[:-2]):
        out[index] = cv2.filter2D(x[index].astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return out


def baseline(x: np.ndarray, kind: str) -> np.ndarray:
    """zeros: the mean colour in normalised space; blur: RISE's blurred image; mean: each image's mean colour."""
    if kind == "zeros":
        return np.zeros_like(x)
    if kind == "blur":
        return blur(x)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=(-2, -1), keepdims=True), x.shape).copy()
    raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def steps(pixels: int, step: int) -> int:
    return math.ceil(pixels / step)


def fractions(pixels: int, step: int) -> np.ndarray:
    """The share of pixels moved at each of the steps + 1 scores."""
    return np.minimum(np.arange(steps(pixels, step) + 1) * step, pixels) / pixels


def ranks(saliency: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W) position of each pixel in RISE's order (argsort, flipped: most salient first;
    a stable sort so ties resolve the same way every run)."""
    order = np.flip(np.argsort(saliency.reshape(-1), kind="stable"))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return rank.reshape(saliency.shape)


def path(start: np.ndarray, finish: np.ndarray, rank: np.ndarray, step: int) -> np.ndarray:
    """(C, H, W) start and finish -> (steps + 1, C, H, W): image i has its i * step most salient pixels
    (all channels) taken from finish."""
    moved = rank[None] < (np.arange(steps(rank.size, step) + 1) * step)[:, None, None]
    return np.where(moved[:, None], finish[None], start[None]).astype(np.float32)


def auc(scores: np.ndarray) -> np.ndarray:
    """Trapezoid rule on [0, 1] with equal spacing, over the last axis (RISE's `auc`)."""
    return (scores.sum(-1) - scores[..., 0] / 2 - scores[..., -1] / 2) / (scores.shape[-1] - 1)
