"""D-RISE: a detection's saliency from random masks, each weighted by how well the masked image still detects it."""
from __future__ import annotations

import numpy as np

from ..detection import iou
from ..errors import OptionError
from ..numeric import minmax
from ..runs import InputMasks, WholeNetwork
from .base import count_option, method
from .resample import rise_masks

__all__ = ["drise"]

CHUNK = 16   # masks per probe call: a YOLOv8 head at 640 is 84 x 8400 floats per copy


@method("drise", run=InputMasks(at_layers=False), kinds=("detector",),
        options={"masks": 5000, "cells": 16, "probability": 0.5, "seed": 0},
        cost="`masks` forwards")
def drise(run: WholeNetwork, masks: int, cells: int, probability: float, seed: int) -> np.ndarray:
    """D-RISE (Petsiuk et al., "Black-box Explanation of Object Detectors via Saliency Maps", CVPR 2021,
    https://arxiv.org/abs/2006.03204): H = sum_i w_i M_i over RISE masks M_i (s x s Bernoulli(p) cells, upsampled
    and shifted), w_i = max over the masked image's proposals d_j of s(d_t, d_j) = IoU(L_t, L_j) * cos(P_t, P_j)
    * O_j, with the target d_t = (its box L_t, objectness 1, its class one-hot P_t). Every raw-head anchor is a
    proposal (before NMS); heads without objectness (YOLOv8) have O_j = 1. Defaults as the paper: 5000 masks,
    16 x 16 cells, p = 0.5. The target is the detection the weights score (its anchor and class).
    """
    masks, cells = count_option(masks, "masks"), count_option(cells, "cells")
    if not 0 < probability <= 1:
        raise OptionError(f"probability must be in (0, 1], got {probability!r}")
    probe = run.probe
    head = probe.ctx.model.head
    if head.layout == "nms":
        raise OptionError("D-RISE needs a raw head's proposals; this detector's graph ends in NMS")
    boxes, _, _ = head.decode(run.logits)                              # the unmasked detections
    _, class_weights, _ = head.decode(run.class_weights)               # the target: one (anchor, class) entry
    flat = class_weights.reshape(len(boxes), -1).argmax(axis=1)
    anchor, class_id = np.divmod(flat, class_weights.shape[-1])
    target = boxes[np.arange(len(boxes)), anchor]                       # (N, 4)
    size = probe.x.shape[2:]
    grids, rows, cols = rise_masks(masks, cells, probability, size, seed)
    saliency = np.zeros((len(probe.x), *size), np.float64)
    for a in range(0, masks, CHUNK):
        b = min(masks, a + CHUNK)
        out = probe.inputs(grids[None, a:b], rows[a:b], cols[a:b], logits=True)   # (N, m, *output)
        weights = _weights(head, out, target, class_id)                            # (N, m)
        saliency += np.einsum("nm,mhw->nhw", weights, rows[a:b] @ grids[a:b] @ cols[a:b])
    return minmax(saliency.astype(np.float32))


def _weights(head, out: np.ndarray, target: np.ndarray, class_id: np.ndarray) -> np.ndarray:
    """max_j IoU(L_t, L_j) * cos(P_t, P_j) * O_j per image and mask; P_t one-hot, so cos = P_j[c] / |P_j|."""
    boxes, scores, objectness = head.decode(out)                       # (N, m, A, 4), (N, m, A, K), (N, m, A)
    scores = scores.astype(np.float64)
    picked = np.take_along_axis(scores, class_id[:, None, None, None], axis=-1)[..., 0]
    cosine = picked / np.maximum(np.linalg.norm(scores, axis=-1), 1e-12)
    overlap = iou(boxes, target[:, None, None])
    return (overlap * cosine * objectness).max(axis=-1)
