"""ROAD (RemOve And Debias) evaluation: percentile removal masks, noisy linear imputation and the combined score."""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# (dy, dx, weight) of the 8 neighbours, as in ROAD's reference imputer
NEIGHBOURS = [(dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def removal_masks(maps: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
    """(N,H,W) maps in [0,1] -> bool (N, 2P, H, W): True = pixel removed (imputed); the first P are MoRF at each
    percentile, the last P LeRF, with pytorch-grad-cam's thresholds."""
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float32)
    out = []
    # The peer keeps `m < percentile(m, p)` in the map's own dtype, so ties at the threshold are removed
    # (a map that is 0 on more than p% of its pixels loses every pixel at MoRF p); LeRF does it on 1 - m.
    for m in (maps, 1 - maps):
        thr = np.percentile(m, list(percentiles), axis=(1, 2)).astype(m.dtype)  # (P, N)
        out.append(~(m[:, None] < thr.T[:, :, None, None]))
    return np.concatenate(out, axis=1)


def _solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Values (K, C) of the removed pixels: each the weighted mean of its in-image neighbours."""
    c, h, w = image.shape
    ys, xs = np.nonzero(removed)
    k = len(ys)
    var = np.full((h, w), -1)
    var[ys, xs] = np.arange(k)
    flat = image.reshape(c, -1).astype(np.float64)
    diag, rows, cols, vals = np.zeros(k), [], [], []
    rhs = np.zeros((k, c))
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inside] += weight
        i, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        j = var[ny, nx]
        unknown = j >= 0
        rows.append(i[unknown])
        cols.append(j[unknown])
        vals.append(np.full(unknown.sum(), -weight))
        rhs[i[~unknown]] += weight * flat[:, ny[~unknown] * w + nx[~unknown]].T
    if k == h * w:
        # Nothing known: the system is singular with a zero right-hand side; the peer's spsolve returns 0
        return rhs
    a = sparse.coo_matrix((np.concatenate(vals + [diag]),
                           (np.concatenate(rows + [np.arange(k)]), np.concatenate(cols + [np.arange(k)]))),
                          shape=(k, k)).tocsc()
    # Symmetric and diagonally dominant: no pivoting needed, and an A+A^T ordering fills in about half as much
    # as the default COLAMD; one factorisation serves every channel
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(rhs)


def impute(images: np.ndarray, removed: np.ndarray, noise: float = 0.01,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """images (N,C,H,W) float32, removed (N,H,W) bool -> imputed copy (N,C,H,W) float32: noisy linear imputation."""
    rng = np.random.default_rng() if rng is None else rng
    out = np.array(images, dtype=np.float32)
    for image, mask in zip(out, np.asarray(removed, dtype=bool)):
        if not mask.any():
            continue
        values = _solve(image, mask)
        if noise:
            values = values + noise * rng.standard_normal(values.shape)
        image[:, mask] = values.T
    return out


def perturbed(x: np.ndarray, maps: np.ndarray, percentiles=PERCENTILES, noise=0.01, seed=0) -> np.ndarray:
    """x (N,C,H,W), maps (N,H,W) -> (N, 2P, C, H, W) imputed images in the order of removal_masks."""
    masks = removal_masks(maps, percentiles)
    n, k = masks.shape[:2]
    images = np.repeat(np.asarray(x, dtype=np.float32)[:, None], k, axis=1)
    flat = impute(images.reshape(n * k, *images.shape[2:]), masks.reshape(n * k, *masks.shape[2:]), noise,
                  np.random.default_rng(seed))
    return flat.reshape(images.shape)


def combined(original: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """original (N,) target-class scores on x; scores (N, 2P) on perturbed() -> (N,) ROADCombined = mean_p (LeRF_p -
    MoRF_p)/2 of the differences. Higher is better."""
    diff = np.asarray(scores, dtype=np.float32) - np.asarray(original, dtype=np.float32)[:, None]
    p = diff.shape[1] // 2
    return (diff[:, p:].mean(axis=1) - diff[:, :p].mean(axis=1)) / 2
