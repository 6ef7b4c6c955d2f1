"""Metrics of one detection's map: the pointing game and energy in its box, and deletion / insertion on its score
(the target functional: the detection's anchor class score, held fixed while pixels move)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import BadRequest
from .metrics import causal, localization

__all__ = ["DetectionScores", "evaluate_detections"]

FORWARD_CHUNK = 16   # path images per forward


@dataclass
class DetectionScores:
    detection: object            # camserve.targets.Detection explained
    pointing_game: float         # 100: the map's maximum within 15 px of the box (TorchRay's rule)
    energy_in_box: float         # % of the map's energy inside the box
    box_share: float             # % of the image the box covers: energy_in_box / box_share > 1 is better than chance
    deletion_auc: float          # the detection's score while its most salient pixels go (lower is better)
    insertion_auc: float         # ... while they come back (higher is better)
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    map: np.ndarray              # (H, W) in [0, 1]
    box: tuple[int, int, int, int]   # what localisation was scored against (whole pixels of the input)
    seconds: float               # the method's time per map (T maps come from one call)


def evaluate_detections(explainer, x: np.ndarray, method: str = "gradcam", targets=None, step: int | None = None,
                        deletion_baseline: str = "zeros", insertion_baseline: str = "blur", boxes=None,
                        **options) -> list[DetectionScores]:
    """Per target detection of one image x (1, C, H, W) (default: its detections with score >= 0.25): the map of
    `method`, then the localisation and causal metrics of that map against that detection. step: pixels moved
    per deletion/insertion step (default: 2% of the image). boxes: per target, the box (x0, y0, x1, y1, input
    pixels) its localisation is scored against, e.g. the ground truth it was matched to; default (or None in
    the list): the detection's own box."""
    if explainer.kind != "detector":
        raise BadRequest(f"detection metrics are for detectors; this model is a {explainer.kind}", "model")
    x = explainer.check_input(x)
    if len(x) != 1:
        raise BadRequest(f"give one image, got {len(x)}", "images")
    if targets is None:
        targets = explainer.detect(x)[0]
        if not targets:
            raise BadRequest("no detection with score >= 0.25 in the image; give targets", "targets")
    targets = list(targets)
    boxes = [None] * len(targets) if boxes is None else list(boxes)
    if len(boxes) != len(targets):
        raise BadRequest(f"give one box per target: {len(boxes)} boxes for {len(targets)} targets", "boxes")
    began = time.perf_counter()
    maps = explainer.explain(x, method, targets=[targets], **options).reshape(len(targets), *x.shape[-2:])
    seconds = (time.perf_counter() - began) / len(targets)
    output = explainer.predict(x)
    weights = explainer._weights(output, [targets])[0]                      # (T, *output)
    height, width = x.shape[-2:]
    step = step or max(1, height * width // 50)
    start = {"deletion": x[0], "insertion": causal.baseline(x, insertion_baseline)[0]}
    finish = {"deletion": causal.baseline(x, deletion_baseline)[0], "insertion": x[0]}
    results = []
    for t, target in enumerate(targets):
        found = explainer.detection_for(output[0], target)
        x0, y0, x1, y1 = found.box if boxes[t] is None else boxes[t]
        box = (int(np.floor(max(x0, 0))), int(np.floor(max(y0, 0))), int(np.ceil(min(x1, width))),
               int(np.ceil(min(y1, height))))
        share = 100.0 * max(box[2] - box[0], 0) * max(box[3] - box[1], 0) / (height * width)
        rank = causal.ranks(maps[t])
        curves = {}
        for kind in ("deletion", "insertion"):
            images = causal.path(start[kind], finish[kind], rank, step)
            scores = np.concatenate([_scores(explainer, images[a:a + FORWARD_CHUNK], weights[t])
                                     for a in range(0, len(images), FORWARD_CHUNK)])
            curves[kind] = scores
        results.append(DetectionScores(
            found, float(localization.pointing_game(maps[t:t + 1], [[box]])[0]),
            float(localization.energy_pointing_game(maps[t:t + 1], [[box]])[0]), share,
            float(causal.auc(curves["deletion"])), float(causal.auc(curves["insertion"])),
            curves["deletion"], curves["insertion"], maps[t], box, seconds))
    return results


def _scores(explainer, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum(W * output) of each image: the detection's score on it."""
    out = explainer.predict(images)
    return (out * weights[None]).reshape(len(out), -1).sum(1)
