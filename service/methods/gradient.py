"""The gradient CAM family (CAM, Grad-CAM and its variants, Eigen-CAM): weights over one layer's evidence."""
from __future__ import annotations

import numpy as np

from ..runs import Activations, Classified, Classifier, Forward, Gradients, WithGradients
from .base import first_component, method, weighted_sum

GRADS = Gradients()


@method("cam", run=Classifier(), cost="1 forward")
def cam(ev: Classified) -> np.ndarray:
    """CAM (Zhou et al. 2016): the classifier's weights of the target class over the last feature map."""
    return weighted_sum(ev.acts, ev.class_weights @ ev.classifier)


@method("gradcam", run=GRADS)
def gradcam(ev: WithGradients) -> np.ndarray:
    """Grad-CAM: channel weights are the spatial mean of the gradients."""
    return weighted_sum(ev.acts, ev.grads.mean(axis=(2, 3)))


@method("hirescam", run=GRADS)
def hirescam(ev: WithGradients) -> np.ndarray:
    """HiResCAM: element-wise gradient x activation, summed over channels."""
    return (ev.grads * ev.acts).sum(axis=1)


@method("gradcam-elementwise", run=GRADS)
def gradcam_elementwise(ev: WithGradients) -> np.ndarray:
    """Grad-CAM element-wise: ReLU of each gradient x activation product before the channel sum."""
    return np.maximum(ev.grads * ev.acts, 0).sum(axis=1)


def plusplus_alpha_grads(acts: np.ndarray, grads: np.ndarray, ratio=1.0, eps: float = 1e-6) -> np.ndarray:
    """Grad-CAM++'s alpha_k(i,j) ReLU(g_k(i,j)), (N, K, h, w).

    alpha = g^2 / (2 g^2 + ratio * sum_ab A_k(a,b) * g^3 + eps). Only g > 0 survives the ReLU, where
    alpha * g = g^3 / (2 g^2 + ratio S g^3 + eps), so alpha is never formed (and g = 0 gives 0, as
    pytorch-grad-cam's explicit mask does). Products, not `**`: numpy's float32 power is ~30x slower.
    """
    spatial = ratio * acts.sum(axis=(2, 3), keepdims=True)
    g = np.maximum(grads, 0)
    g2 = g * g
    g3 = g2 * g
    denominator = np.multiply(spatial, g3)
    denominator += 2 * g2
    denominator += eps
    return np.divide(g3, denominator, out=g3)


def plusplus_weights(acts: np.ndarray, grads: np.ndarray, ratio=1.0, eps: float = 1e-6) -> np.ndarray:
    """Grad-CAM++ channel weights w_k = sum_ij alpha_k(i,j) ReLU(g_k(i,j))."""
    return plusplus_alpha_grads(acts, grads, ratio, eps).sum(axis=(2, 3))


@method("gradcam++", run=GRADS)
def gradcam_plusplus(ev: WithGradients) -> np.ndarray:
    """Grad-CAM++ (pytorch-grad-cam's closed form for exponential scores)."""
    return weighted_sum(ev.acts, plusplus_weights(ev.acts, ev.grads))


@method("xgradcam", run=GRADS)
def xgradcam(ev: WithGradients) -> np.ndarray:
    """XGrad-CAM: gradients weighted by the activation's share of its channel sum."""
    sums = ev.acts.sum(axis=(2, 3), keepdims=True)
    return weighted_sum(ev.acts, (ev.grads * ev.acts / (sums + 1e-7)).sum(axis=(2, 3)))


@method("layercam", run=GRADS)
def layercam(ev: WithGradients) -> np.ndarray:
    """LayerCAM: positive gradients as element-wise weights."""
    return (np.maximum(ev.grads, 0) * ev.acts).sum(axis=1)


@method("eigencam", run=Forward(), cost="1 forward")
def eigencam(ev: Activations) -> np.ndarray:
    """Eigen-CAM: first principal component of the activations (class-agnostic)."""
    return first_component(ev.acts)


@method("randomcam", run=Forward(), options={"seed": 0}, cost="1 forward", unbatched=True)
def randomcam(ev: Activations, seed: int) -> np.ndarray:
    """RandomCAM: channel weights drawn from U(-1, 1), a baseline every method should beat (pytorch-grad-cam)."""
    # numpy's legacy generator: pytorch-grad-cam draws from np.random after np.random.seed(seed)
    weights = np.random.RandomState(seed).uniform(-1, 1, ev.acts.shape[:2])
    return np.einsum("nk,nkhw->nhw", weights, ev.acts.astype(np.float64)).astype(np.float32)


@method("eigengradcam", run=GRADS)
def eigengradcam(ev: WithGradients) -> np.ndarray:
    """EigenGrad-CAM: first principal component of gradient x activation."""
    return first_component(ev.grads * ev.acts)
