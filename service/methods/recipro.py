"""Recipro-CAM: the class probability of copies of the feature map that keep one position each."""
from __future__ import annotations

import numpy as np

from ..numeric import softmax
from ..runs import MosaicTail, Probed
from .base import method

GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16


def spread(h: int, w: int, gaussian: bool) -> np.ndarray:
    """(h*w, h*w): row n weighs where position n's feature vector goes (one-hot, or the 3x3 Gaussian
    around n cropped at the borders, as the official CNN code's `_mosaic_feature`)."""
    if not gaussian:
        return np.eye(h * w, dtype=np.float32)
    rows = np.zeros((h * w, h, w), np.float32)
    for i in range(h):
        for j in range(w):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        rows[i * w + j, i + di, j + dj] = GAUSSIAN[1 + di, 1 + dj]
    return rows.reshape(h * w, h * w)


@method("reciprocam", run=MosaicTail(), options={"gaussian": False}, relu=False,
        cost="1 forward + 1 run of the network after the layer on h*w copies")
def reciprocam(ev: Probed, gaussian: bool) -> np.ndarray:
    """Recipro-CAM (Byun & Lee): softmax probability of each single-position copy, min-max over the map.

    Every class comes out of the same run: `extras["class_maps"]` holds (N, classes, h, w).
    """
    n, _, h, w = ev.acts.shape
    logits = ev.probe.mosaic(np.arange(h * w, dtype=np.int64), spread(h, w, bool(gaussian)))
    probs = softmax(logits.astype(np.float64), axis=2)                         # (N, h*w, classes)
    ev.extras["class_maps"] = probs.transpose(0, 2, 1).reshape(n, -1, h, w).astype(np.float32)
    return np.einsum("npc,nc->np", probs, ev.class_weights).reshape(n, h, w)
