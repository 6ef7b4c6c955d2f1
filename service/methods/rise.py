"""RISE: the saliency of a pixel is the class score averaged over random masks that keep it."""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..numeric import minmax
from ..runs import InputMasks, WholeNetwork
from .base import class_probability, class_score, count_option, method
from .resample import rise_masks

CHUNK = 256


@method("rise", run=InputMasks(at_layers=False),
        options={"masks": 2000, "cells": 8, "probability": 0.5, "seed": 0, "scores": "softmax"},
        cost="`masks` forwards")
def rise(run: WholeNetwork, masks: int, cells: int, probability: float, seed: int, scores: str) -> np.ndarray:
    """RISE (Petsiuk et al. 2018, official code): sum_i f(x * M_i) M_i / (N p) with seeded masks.

    Defaults follow the official Easy_start notebook (2000 masks, 8 x 8 cells, p = 0.5); scores are
    softmax probabilities like the official notebooks, or raw logits with scores="logits".
    """
    masks, cells = count_option(masks, "masks"), count_option(cells, "cells")
    if not 0 < probability <= 1:
        raise OptionError(f"probability must be in (0, 1], got {probability!r}")
    if scores not in ("softmax", "logits"):
        raise OptionError(f"scores must be 'softmax' or 'logits', got {scores!r}")
    probe = run.probe
    size = probe.x.shape[2:]
    grids, rows, cols = rise_masks(masks, cells, probability, size, seed)
    logits = probe.inputs(grids[None], rows, cols, logits=True)                    # (N, M, classes)
    weights = class_probability(logits, probe.rows) if scores == "softmax" else class_score(logits, probe.rows)
    saliency = np.zeros((len(probe.x), *size), np.float64)
    for a in range(0, masks, CHUNK):
        chunk = rows[a:a + CHUNK] @ grids[a:a + CHUNK] @ cols[a:a + CHUNK]       # (m, H, W)
        saliency += np.einsum("nm,mhw->nhw", weights[:, a:a + CHUNK], chunk)
    return minmax((saliency / (masks * probability)).astype(np.float32))
