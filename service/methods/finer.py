"""Finer-CAM (pytorch-grad-cam FinerCAM): Grad-CAM of the target class against the classes it is most easily
confused with."""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..numeric import softmax
from ..runs import Gradients, WithGradients
from .base import count_option, method, weighted_sum


def finer_rows(logits: np.ndarray, rows: np.ndarray, options: dict) -> np.ndarray:
    """The class rows that seed FinerCAM's gradients: d f / d logits per image, where

    f = sum_j p_j (z_m - alpha z_j) / (sum_j p_j + 1e-9),   p = softmax(z),

    m the target (each row's largest weight: the top-1 by default) and j the `comparisons` classes
    whose logits are nearest the target's (ranks 1..comparisons of pytorch-grad-cam's argsort of
    |z - z_m|; rank 0 is the target itself). The probabilities are differentiated too, as the peer's
    FinerWeightedTarget is. A gradient of f is the gradient run seeded by these rows.
    """
    alpha = float(options["alpha"])
    comparisons = count_option(options["comparisons"], "option 'comparisons' of 'finercam'")
    n, classes = logits.shape
    if classes < 2:
        raise OptionError("finercam compares the target with other classes; this model has one class")
    z32 = logits.astype(np.float32)
    target = rows.argmax(axis=1)
    nearest = np.argsort(np.abs(z32 - z32[np.arange(n), target][:, None]), axis=-1)
    z = logits.astype(np.float64)
    p = softmax(z, -1)
    out = np.zeros((n, classes), np.float64)
    for i in range(n):
        main, others = nearest[i, 0], nearest[i, 1:1 + min(comparisons, classes - 1)]
        d = z[i, main] - alpha * z[i, others]
        pj = p[i, others]
        total, numerator = pj.sum(), (pj * d).sum()
        denominator = total + 1e-9
        f = numerator / denominator
        d_numerator = -p[i] * numerator   # sum_j d_j dp_j/dz = p_j d_j e_j - p numerator
        np.add.at(d_numerator, others, pj * d - alpha * pj)
        d_numerator[main] += total
        d_denominator = -p[i] * total     # sum_j dp_j/dz = p_j e_j - p total
        np.add.at(d_denominator, others, pj)
        out[i] = (d_numerator - f * d_denominator) / denominator
    return out.astype(np.float32)


@method("finercam", run=Gradients(retarget=finer_rows), options={"alpha": 1.0, "comparisons": 3},
        cost="2 forwards + 1 backward")
def finercam(ev: WithGradients) -> np.ndarray:
    """Finer-CAM: Grad-CAM weights of the gradient of the target's logit minus alpha times its nearest classes'."""
    return weighted_sum(ev.acts, ev.grads.mean(axis=(2, 3)))
