"""ShapleyCAM (Cai et al. 2025, pytorch-grad-cam 1.5.7): Grad-CAM's weights with a second-order Shapley term."""
from __future__ import annotations

import numpy as np

from ..runs import HessianGradients, WithHessian
from .base import method, weighted_sum


@method("shapleycam", run=HessianGradients(), cost="1 forward + 1 backward + 1 forward-over-backward")
def shapleycam(ev: WithHessian) -> np.ndarray:
    """ShapleyCAM: channel weights are the spatial mean of g - (H A) / 2, the gradient of the class score less
    half its Hessian applied to the activations (the peer's grads - 0.5 * hvp); where the network after the
    layer is piecewise linear, H A = 0 and this is Grad-CAM."""
    return weighted_sum(ev.acts, (ev.grads - 0.5 * ev.hvp).mean(axis=(2, 3)))
