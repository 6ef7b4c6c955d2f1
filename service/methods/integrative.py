"""Integrative CAM, a documented RECONSTRUCTION from the paper's abstract (arXiv 2412.01354), not its formulas.

Per conv layer: a Grad-CAM++ alpha generalised to a smooth score function f (r = f'''/f''),
a FullGrad-style bias term sum_k b_k dS/dz_k, and layer weights = softmax over layers of the
mean positive gradient x activation (the explainer's "adaptive" fusion).
"""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..numeric import softmax
from ..runs import ConvBlock, ConvBlocks
from .base import method, weighted_sum
from .gradient import plusplus_weights


def _ratio(score: str, logits: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """r(S) = f'''(S) / f''(S) per image: 1 for f = exp, a function of p for f = softmax probability."""
    if score == "exp":
        return np.ones(len(logits), np.float32)
    if score != "softmax":
        raise OptionError(f"score must be 'exp' or 'softmax', got {score!r}")
    p = softmax(logits, 1)[np.arange(len(logits)), class_weights.argmax(axis=1)]
    denominator = 1 - 2 * p
    denominator = np.where(np.abs(denominator) < 1e-3, np.copysign(1e-3, denominator), denominator)
    return ((1 - 6 * p + 6 * p ** 2) / denominator).astype(np.float32)


@method("integrative", run=ConvBlocks(), kinds=("classifier",), fusion="adaptive",
        options={"score": "exp", "temperature": 1.0, "tanh": False},
        cost="1 forward + 1 full backward")
def integrative(ev: ConvBlock, score: str = "exp", temperature: float = 1.0, tanh: bool = False) -> np.ndarray:
    """Integrative CAM (reconstruction): generalised-alpha weights plus a bias term, at every conv layer."""
    r = _ratio(score, ev.logits, ev.class_weights)[:, None, None, None]
    weights = plusplus_weights(ev.acts, ev.grads, r)
    bias_term = np.einsum("k,nkhw->nhw", ev.bias, ev.pre_grads)
    return weighted_sum(ev.acts, weights) + bias_term
