"""Ablation-CAM: a channel's weight is the relative drop of the class score when it is ablated."""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..runs import ALL_KINDS, ChannelTail, Probed
from .base import class_score, method, weighted_sum

# A layer whose minimum is 0 is ablated with 0; any other with a value far below its minimum, so a
# switched-off channel stays off after the layer (pytorch-grad-cam's AblationLayer).
FAR_BELOW = np.float32(1e7)
PEER_BATCH = 32


def _fill(acts: np.ndarray, fill) -> np.ndarray:
    """(N|1, K|1, 1): the value each ablated copy's channel is set to."""
    n, k = acts.shape[:2]
    lowest = acts.reshape(n, -1).min(axis=1).astype(np.float32)
    if fill == "min-1e7":
        return np.where(lowest == 0, 0, lowest - FAR_BELOW)[:, None, None].astype(np.float32)
    if fill == "pytorch-grad-cam":
        # its AblationLayer re-reads the minimum after each in-place ablation, so within a batch of
        # 32 copies the i-th gets min - (i+1)e7, in float32 steps
        steps = np.empty((n, PEER_BATCH), np.float32)
        value = lowest.copy()
        for i in range(PEER_BATCH):
            value = (value - FAR_BELOW).astype(np.float32)
            steps[:, i] = value
        per_channel = steps[:, np.arange(k) % PEER_BATCH]
        return np.where(lowest[:, None] == 0, 0, per_channel)[:, :, None].astype(np.float32)
    if isinstance(fill, (int, float)) and not isinstance(fill, bool) and np.isfinite(fill):
        return np.full((1, 1, 1), fill, np.float32)
    raise OptionError(f"fill must be 'min-1e7', 'pytorch-grad-cam' or a finite number, got {fill!r}")


@method("ablationcam", run=ChannelTail(), options={"fill": "min-1e7"}, kinds=ALL_KINDS,
        cost="1 forward + K runs of the network after the layer")
def ablationcam(ev: Probed, fill) -> np.ndarray:
    """Ablation-CAM (Desai & Ramaswamy 2020): w_k = (S - S with channel k ablated) / S, S the target's score
    (any kind's: a class logit, a region's sum, a detection's score, a similarity).

    fill: "min-1e7" (0 when the layer's minimum is 0, else min - 1e7: pytorch-grad-cam's stated rule),
    "pytorch-grad-cam" (that library's actual values, which also drop by 1e7 per copy within its
    batches of 32 on layers that go negative), or a number.
    """
    acts = ev.acts
    k = acts.shape[1]
    ablated = ev.probe.channels((1.0 - np.eye(k, dtype=np.float32))[None], _fill(acts, fill))
    original = class_score(ev.logits, ev.class_weights)[:, None]
    return weighted_sum(acts, (original - ablated) / original)
