"""FD-CAM: Grad-CAM weights combined with the score change of switching similar channels on and off together."""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..runs import ChannelTail, ProbedGradients
from .base import class_score, method, minmax_channels, weighted_sum


def similarity_groups(acts: np.ndarray, threshold: float) -> np.ndarray:
    """(N, K, K) 0/1: row p marks the channels whose cosine similarity to p is above p's `threshold` quantile."""
    n, k = acts.shape[:2]
    flat = acts.reshape(n, k, -1).astype(np.float32)
    norms = np.linalg.norm(flat, axis=2, keepdims=True)
    # unit rows, and zero rows for dead channels: their similarity is 0, the official code's NaN -> 0
    unit = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)
    cosine = unit @ unit.transpose(0, 2, 1)
    # torch.quantile's linear interpolation from the two order statistics around q * (K - 1)
    position = threshold * (k - 1)
    low = int(np.floor(position))
    high = min(low + 1, k - 1)
    # one kth: numpy's multi-kth partition is six times slower; the next order statistic is the
    # smallest of what lands above the kth
    ordered = np.partition(cosine, low, axis=2)
    lower = ordered[..., low]
    upper = ordered[..., low + 1:].min(axis=2) if high > low else lower
    cut = lower + (position - low) * (upper - lower)
    return cosine > cut[..., None]


@method("fdcam", run=ChannelTail(with_gradients=True), options={"threshold": 0.95, "relu": False},
        relu=False, cost="1 forward + 1 backward + 2K runs of the network after the layer")
def fdcam(ev: ProbedGradients, threshold: float) -> np.ndarray:
    """FD-CAM (official code): w = exp(minmax(s_on + s_off)) * minmax(mean grad) - 0.5.

    s_on[p] is the score with only p's similarity group kept, s_off[p] the drop with it removed.
    Like grad-cam 1.3.2, which the official code pins, no ReLU before the min-max (relu=True adds it).
    """
    if not 0.0 <= threshold <= 1.0:
        raise OptionError(f"threshold must be in [0, 1], got {threshold!r}")
    acts = ev.acts
    k = acts.shape[1]
    on = similarity_groups(acts, threshold)
    switches = np.empty((len(acts), 2 * k, k), np.float32)                    # on masks, then their complements
    switches[:, :k] = on
    np.logical_not(on, out=switches[:, k:], casting="unsafe")
    scores = ev.probe.channels(switches)                                      # (N, 2K)
    full = class_score(ev.logits, ev.class_weights)[:, None]
    switching = scores[:, :k] + (full - scores[:, k:])
    gradient = ev.grads.mean(axis=(2, 3))
    unit = lambda v: minmax_channels(v.astype(np.float64), 0.0, axes=(1,))  # noqa: E731
    weights = np.exp(unit(switching)) * unit(gradient) - 0.5
    return weighted_sum(acts, weights)
