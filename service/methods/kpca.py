"""KPCA-CAM (pytorch-grad-cam KPCA_CAM): the first kernel principal component of a layer's activations."""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ..errors import OptionError
from ..runs import Activations, Forward
from .base import method

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


@method("kpcacam", run=Forward(), options={"kernel": "sigmoid", "gamma": None}, cost="1 forward")
def kpcacam(ev: Activations, kernel: str, gamma) -> np.ndarray:
    """KPCA-CAM: projection on the first kernel principal component of the centred (h*w, K) activations.

    As pytorch-grad-cam 1.5.7 (get_2d_projection_kernel, scikit-learn's KernelPCA(n_components=1)):
    positions are the samples and channels the features, centred over positions; the kernel (gamma
    None: 1/K; KernelPCA's coef0 = 1 and degree = 3) is centred, its top eigenvector signed so that
    its largest entry is positive (svd_flip) and scaled by sqrt(eigenvalue). Class-agnostic.
    """
    if kernel not in KERNELS:
        raise OptionError(f"unknown KPCA-CAM kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    number = isinstance(gamma, (int, float, np.integer, np.floating)) and not isinstance(gamma, (bool, np.bool_))
    if gamma is not None and not (number and np.isfinite(gamma) and gamma >= 0):
        raise OptionError(f"option 'gamma' of 'kpcacam' takes a finite number >= 0 (none: 1/channels), got {gamma!r}")
    acts = np.nan_to_num(ev.acts)
    n, k, h, w = acts.shape
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        x = acts[i].reshape(k, h * w).T
        component = first_kernel_component(x - x.mean(axis=0), kernel, 1.0 / k if gamma is None else float(gamma))
        out[i] = component.reshape(h, w)
    return out


def kernel_matrix(x: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    """scikit-learn's pairwise_kernels(x, metric=kernel) (coef0 = 1, degree = 3), in x's dtype as it computes it."""
    if kernel == "rbf":   # euclidean_distances: float64 for float32 rows, clipped at 0, an exact 0 diagonal
        wide = x.astype(np.float64)
        squares = np.einsum("ij,ij->i", wide, wide)
        distances = np.maximum(squares[:, None] + squares[None, :] - 2 * wide @ wide.T, 0).astype(x.dtype)
        np.fill_diagonal(distances, 0)
        return np.exp(distances * -gamma)
    if kernel == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    dots = x @ x.T
    if kernel in ("linear", "cosine"):
        return dots
    dots *= gamma
    dots += 1
    return np.tanh(dots) if kernel == "sigmoid" else dots ** 3


def first_kernel_component(x: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    """KernelPCA(n_components=1).fit_transform(x)[:, 0] for (samples, features) x.

    The kernel and its centring in x's dtype, as scikit-learn computes them (a float32 kernel of
    near-constant activations centres to exactly 0, as the peer's does). The top eigenpair as its
    eigen_solver="auto" takes it: a dense eigh up to 200 samples, ARPACK above (from a fixed start
    here, a random one there: both converge to the same pair), then svd_flip's sign (the largest
    entry positive). A negative eigenvalue, which scikit-learn refuses, gives 0.
    """
    kmat = kernel_matrix(x, kernel, gamma)
    n = len(kmat)
    columns = kmat.sum(axis=0) / n                   # KernelCenterer's fit and transform, in their order
    rows = (kmat.sum(axis=1) / n)[:, None]
    kmat -= columns
    kmat -= rows
    kmat += columns.sum() / n
    if not kmat.any():
        return np.zeros(n, x.dtype)
    if n > 200:
        start = np.random.RandomState(0).uniform(-1, 1, n)
        values, vectors = scipy.sparse.linalg.eigsh(kmat.astype(np.float64), 1, which="LA", tol=0, v0=start)
    else:
        values, vectors = scipy.linalg.eigh(kmat, subset_by_index=(n - 1, n - 1))
    vector = vectors[:, 0] * np.sign(vectors[np.argmax(np.abs(vectors[:, 0])), 0])   # svd_flip
    return vector * np.sqrt(max(values[0], 0))
