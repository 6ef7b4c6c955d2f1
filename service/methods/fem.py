"""FEM, the Feature Explanation Method (Fuad et al. 2020; pytorch-grad-cam FEM): channels weighed by their outliers."""
from __future__ import annotations

import numpy as np

from ..runs import Activations, Forward
from .base import method, weighted_sum


@method("fem", run=Forward(), options={"k": 2.0}, cost="1 forward")
def fem(ev: Activations, k: float) -> np.ndarray:
    """FEM: a channel's weight is the share of its positions above its mean + k standard deviations.

    As pytorch-grad-cam 1.5.7: spatial mean and population std per channel, the strict `>`, the
    weights over the raw activations (sum_k w_k A_k). Class-agnostic.
    """
    acts = ev.acts
    threshold = acts.mean(axis=(2, 3), keepdims=True) + k * acts.std(axis=(2, 3), keepdims=True)
    return weighted_sum(acts, (acts > threshold).mean(axis=(2, 3)))
