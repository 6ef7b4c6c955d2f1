"""Ablation-CAM: a channel's weight is the relative drop of the class score when it is ablated."""
from __future__ import annotations

import numpy as np

from .base import Evidence, Needs, class_score, method, weighted_sum

# pytorch-grad-cam's AblationLayer: a layer whose minimum is 0 is ablated with 0, any other with a
# value far below its minimum (min - 1e7), so that a "switched off" channel stays off after the layer.
FAR_BELOW = 1e7


@method("ablationcam", needs=Needs(masks="channel"), cost="1 forward + K runs of the network after the layer")
def ablationcam(ev: Evidence) -> np.ndarray:
    """Ablation-CAM (Desai & Ramaswamy 2020): w_k = (S - S with channel k ablated) / S."""
    acts = ev.acts
    n, k = acts.shape[:2]
    lowest = acts.reshape(n, -1).min(axis=1)
    fill = np.where(lowest == 0, 0.0, lowest - FAR_BELOW).astype(np.float32)[:, None, None]
    ablated = ev.probe.channels((1.0 - np.eye(k, dtype=np.float32))[None], fill)
    original = class_score(ev.logits, ev.class_weights)[:, None]
    return weighted_sum(acts, (original - ablated) / original)
