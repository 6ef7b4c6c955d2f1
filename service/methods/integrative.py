"""Integrative CAM, a documented RECONSTRUCTION from the paper's abstract (arXiv 2412.01354), not its formulas.

Per conv block: sum_k alpha_k(i,j) ReLU(g_k(i,j)) A_k(i,j), Grad-CAM++'s alpha generalised to a smooth score
function f (r = f'''/f'') and kept per position, as LayerCAM keeps its gradients, plus a FullGrad-style bias term
sum_k b_k dS/dz_k(i,j); layers fused by a softmax over layers of the share of their gradient x activation that is
positive, over a temperature (the explainer's "adaptive" fusion). docs/methods/integrative.md says why each
choice the abstract leaves open was made, with the measurements.
"""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..numeric import softmax
from ..postprocess import TEMPERATURE
from ..runs import ConvBlockMap, ConvBlocks
from .base import method


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


@method("integrative", run=ConvBlocks(ratio=_ratio), kinds=("classifier",), fusion="adaptive",
        options={"temperature": TEMPERATURE, "tanh": False}, cost="1 forward + 1 full backward")
def integrative(ev: ConvBlockMap, temperature: float = TEMPERATURE, tanh: bool = False) -> np.ndarray:
    """Integrative CAM (reconstruction): the generalised alpha x positive gradient x activation at each position,
    plus the bias term, at every conv block (summed over channels inside the graph, graph_tools.reductions)."""
    return ev.map
