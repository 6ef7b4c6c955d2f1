"""The gradient CAM family (CAM, Grad-CAM and its variants, Eigen-CAM): weights over one layer's evidence."""
from __future__ import annotations

import numpy as np

from .base import Evidence, Needs, first_component, method, weighted_sum

GRADS = Needs(gradients=True)


@method("cam", needs=Needs(classifier=True), cost="1 forward")
def cam(ev: Evidence) -> np.ndarray:
    """CAM (Zhou et al. 2016): the classifier's weights of the target class over the last feature map."""
    return weighted_sum(ev.acts, ev.class_weights @ ev.classifier)


@method("gradcam", needs=GRADS)
def gradcam(ev: Evidence) -> np.ndarray:
    """Grad-CAM: channel weights are the spatial mean of the gradients."""
    return weighted_sum(ev.acts, ev.grads.mean(axis=(2, 3)))


@method("hirescam", needs=GRADS)
def hirescam(ev: Evidence) -> np.ndarray:
    """HiResCAM: element-wise gradient x activation, summed over channels."""
    return (ev.grads * ev.acts).sum(axis=1)


@method("gradcam-elementwise", needs=GRADS)
def gradcam_elementwise(ev: Evidence) -> np.ndarray:
    """Grad-CAM element-wise: ReLU of each gradient x activation product before the channel sum."""
    return np.maximum(ev.grads * ev.acts, 0).sum(axis=1)


def plusplus_alpha(acts: np.ndarray, g2: np.ndarray, g3: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Grad-CAM++'s alpha = g^2 / (2 g^2 + sum_ab A(a,b) g^3 + eps), zero where the gradient is zero."""
    sum_acts = acts.sum(axis=(2, 3), keepdims=True)
    alpha = g2 / (2 * g2 + sum_acts * g3 + eps)
    return np.where(g2 != 0, alpha, 0)


@method("gradcam++", needs=GRADS)
def gradcam_plusplus(ev: Evidence) -> np.ndarray:
    """Grad-CAM++ (pytorch-grad-cam's closed form for exponential scores)."""
    g = ev.grads
    alpha = plusplus_alpha(ev.acts, g ** 2, g ** 3)
    return weighted_sum(ev.acts, (alpha * np.maximum(g, 0)).sum(axis=(2, 3)))


@method("xgradcam", needs=GRADS)
def xgradcam(ev: Evidence) -> np.ndarray:
    """XGrad-CAM: gradients weighted by the activation's share of its channel sum."""
    sums = ev.acts.sum(axis=(2, 3), keepdims=True)
    return weighted_sum(ev.acts, (ev.grads * ev.acts / (sums + 1e-7)).sum(axis=(2, 3)))


@method("layercam", needs=GRADS)
def layercam(ev: Evidence) -> np.ndarray:
    """LayerCAM: positive gradients as element-wise weights."""
    return (np.maximum(ev.grads, 0) * ev.acts).sum(axis=1)


@method("eigencam", needs=Needs(), cost="1 forward")
def eigencam(ev: Evidence) -> np.ndarray:
    """Eigen-CAM: first principal component of the activations (class-agnostic)."""
    return first_component(ev.acts)


@method("eigengradcam", needs=GRADS)
def eigengradcam(ev: Evidence) -> np.ndarray:
    """EigenGrad-CAM: first principal component of gradient x activation."""
    return first_component(ev.grads * ev.acts)
