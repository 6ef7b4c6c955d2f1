"""Bilinear resampling as interpolation matrices (rows @ map @ cols), Gaussian blur, and RISE's random masks."""
from __future__ import annotations

import math

import cv2
import numpy as np


def linear_matrix(size_out: int, size_in: int, align_corners: bool, boundary: str = "clamp") -> np.ndarray:
    """(size_out, size_in) matrix of 1-D linear interpolation.

    align_corners=False is torch's F.interpolate(mode="bilinear") (source index clamped at 0);
    boundary="mirror" instead reflects past-the-edge samples about the edge pixels, as
    skimage.transform.resize(order=1, mode="reflect") does (RISE's masks).
    """
    out = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(out)
    else:
        src = (out + 0.5) * (size_in / size_out) - 0.5
        if boundary == "clamp":
            src = np.maximum(src, 0.0)
    low = np.floor(src)
    frac = src - low
    low = low.astype(np.int64)
    matrix = np.zeros((size_out, size_in), np.float64)
    for index, weight in ((low, 1.0 - frac), (low + 1, frac)):
        if boundary == "mirror" and size_in > 1:
            period = 2 * (size_in - 1)
            index = np.abs(index) % period
            index = np.where(index >= size_in, period - index, index)
        else:
            index = np.clip(index, 0, size_in - 1)
        np.add.at(matrix, (np.arange(size_out), index), weight)
    return matrix.astype(np.float32)


def upsampling(source: tuple[int, int], size: tuple[int, int], align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) with upsampled = rows @ map @ cols for (h, w) maps brought to size (H, W)."""
    (h, w), (height, width) = source, size
    return linear_matrix(height, h, align_corners), linear_matrix(width, w, align_corners).T.copy()


def upsample(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return (rows @ maps.astype(np.float32, copy=False) @ cols).astype(np.float32, copy=False)


def gaussian_blur(x: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur of (N, C, H, W) images with reflect-101 borders (kornia's default)."""
    out = np.empty_like(x)
    for n, image in enumerate(x):
        for c, plane in enumerate(image):
            out[n, c] = cv2.GaussianBlur(np.ascontiguousarray(plane), (kernel, kernel), sigma, sigmaY=sigma,
                                         borderType=cv2.BORDER_REFLECT_101)
    return out


def rise_masks(count: int, cells: int, probability: float, size: tuple[int, int], seed: int):
    """RISE's masks as (grids (M, s, s), rows (M, H, s), cols (M, s, W)): mask m = rows[m] @ grids[m] @ cols[m].

    The official recipe: a Bernoulli(p) grid of s x s cells, bilinearly upsampled (mirror borders) to
    (s + 1) * ceil(H / s) pixels, cropped at a random shift below one cell. The crop of an upsampled
    grid is a slice of the interpolation matrix, so masks stay s x s until the graph builds them.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    grids = (rng.random((count, cells, cells)) < probability).astype(np.float32)
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    full_rows = linear_matrix((cells + 1) * cell_h, cells, False, "mirror")
    full_cols = linear_matrix((cells + 1) * cell_w, cells, False, "mirror")
    dy, dx = rng.integers(0, cell_h, count), rng.integers(0, cell_w, count)
    rows = np.stack([full_rows[d:d + height] for d in dy])
    cols = np.stack([full_cols[d:d + width].T for d in dx])
    return grids, rows, cols
