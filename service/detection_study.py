"""An evaluation study of a detector: per ground-truth box, the model's matching detection explained by every chosen
method and scored with the per-detection metrics; summarised with 95% intervals and written out like a classifier's
study (results.json, index.html, a gallery with the boxes drawn)."""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import images
from .detection_metrics import evaluate_detections
from .errors import BadRequest
from .metrics import causal
from .metrics.summary import interval
from .targets import Box

__all__ = ["METRICS", "BETTER", "match", "pairs", "score_detections", "summary", "run"]

METRICS = ("matched", "pointing_game", "energy_in_box", "box_share", "deletion_auc", "insertion_auc",
           "seconds_per_detection")
BETTER = {"matched": "higher", "pointing_game": "higher", "energy_in_box": "higher", "box_share": "",
          "deletion_auc": "lower", "insertion_auc": "higher", "seconds_per_detection": "lower"}
OWN_DETECTIONS = 5    # an image without ground-truth boxes: its top detections are explained
SCORE = 0.25          # a matched detection's least score (detect()'s default)


def match(explainer, x: np.ndarray, boxes: list, classes: list, score: float = SCORE) -> list:
    """Per ground-truth box (input pixels) of one image, the model's detection it matches (FasterRCNNBoxScoreTarget's
    rule: IoU >= 0.5, best IoU + score, of the box's class where given), or None where the model missed it: no
    prediction overlaps it, or the best one scores under `score` (what detect() would have dropped)."""
    if not (isinstance(score, (int, float)) and 0.0 <= score <= 1.0):
        raise BadRequest(f"score must be in [0, 1], got {score!r}", "score")
    output = explainer.predict(x)[0]
    found = []
    for box, class_id in zip(boxes, classes):
        try:
            detection = explainer.detection_for(output, Box(tuple(map(float, box)), class_id))
        except BadRequest as error:
            if error.field != "targets":   # a class the detector lacks is the caller's error, not a miss
                raise
            detection = None
        found.append(detection if detection is not None and detection.score >= score else None)
    return found


def pairs(explainer, x: np.ndarray, boxes: list, classes: list,
          score: float = SCORE) -> tuple[list[tuple], list[float]]:
    """What one image (1, C, H, W) has to explain: (detection, its ground-truth box) per box the model detected,
    or, with no boxes, (detection, None) for its top detections; and per box 100 if it was detected, else 0."""
    if not boxes:
        return [(d, None) for d in explainer.detect(x, score)[0][:OWN_DETECTIONS]], []
    found = match(explainer, x, boxes, classes, score)
    return ([(d, tuple(b)) for d, b in zip(found, boxes) if d is not None],
            [100.0 * (d is not None) for d in found])


def score_detections(explainer, jobs: list[tuple[np.ndarray, list]], method: str, layers: list[str] | None,
                     settings, options: dict, progress: Callable[[int], None] = lambda done: None
                     ) -> tuple[dict, dict, list]:
    """Per detection metrics of `method` over jobs [(x (1, C, H, W), pairs)]: (per-detection arrays, the mean
    deletion / insertion curves with their pixel fractions, the DetectionScores)."""
    extra = {"layers": layers} if layers else {}
    scores = []
    for x, found in jobs:
        if found:
            scores += evaluate_detections(explainer, x, method, [d for d, _ in found], settings.deletion_step,
                                          settings.deletion_baseline, settings.insertion_baseline,
                                          [b for _, b in found], **extra, **options)
        progress(1)
    if not scores:
        raise BadRequest("no image has a detection to explain: the model matched none of the boxes (IoU >= 0.5 and "
                         "the least score) and found nothing in the images without boxes", "images")
    per = {name: np.array([getattr(s, name) for s in scores])
           for name in ("pointing_game", "energy_in_box", "box_share", "deletion_auc", "insertion_auc")}
    per["seconds_per_detection"] = np.array([s.seconds for s in scores])
    h, w = jobs[0][0].shape[-2:]
    curves = {"fractions": causal.fractions(h * w, settings.deletion_step or max(1, h * w // 50)),
              "deletion": np.mean([s.deletion_curve for s in scores], 0),
              "insertion": np.mean([s.insertion_curve for s in scores], 0)}
    return per, curves, scores


def summary(per: dict, matched: list[float]) -> dict:
    """Every metric's mean and 95% interval; `matched` is per ground-truth box (100: detected)."""
    return {"matched": interval(np.array(matched or [np.nan])), **{k: interval(v) for k, v in per.items()}}


def run(explainer, config, scenes: list, study, out: Path, dataset: str,
        progress: Callable[[int], None] = lambda done: None, score: float = SCORE) -> dict:
    """Every scene's boxes matched to detections (of at least `score`), each matched one explained and scored by
    every method; writes
    out/results.json, out/index.html, the inputs under out/images and overlays under out/gallery/<method>."""
    from .report.html import write_report
    out.mkdir(parents=True, exist_ok=True)
    entries, jobs, scenes_of, matched = [], [], [], []
    for scene in scenes:
        file = f"images/{scene.name}.png"
        images.write_png(out / file, scene.image)
        x = images.normalise(scene.image, config.preprocessing)
        classes = [o["label"] if o["label"] >= 0 else None for o in scene.objects]
        found, hits = pairs(explainer, x, scene.boxes, classes, score)
        matched += hits
        for k, (detection, truth) in enumerate(found):
            shown = truth or tuple(int(round(v)) for v in detection.box)
            entries.append({"name": f"{scene.name}-{k}", "kind": "ground truth" if truth else "own detection",
                            "label": detection.class_id, "label_name": detection.label,
                            "boxes": [list(map(int, shown))], "size": list(scene.image.shape[:2]), "file": file,
                            "score": detection.score})
        jobs.append((x, found))
        scenes_of.append(scene)
    step = study.settings.deletion_step
    results = {"model": config.name, "dataset": dataset, "n": len(scenes), "detections": len(entries),
               "provider": explainer.provider, "threads": explainer.runtime.threads or os.cpu_count(),
               "target": "each ground-truth box's matched detection (IoU >= 0.5, best IoU + score, of the box's "
                         f"class where given, score >= {score}), scored by its anchor's class score; images "
                         f"without boxes: their top {OWN_DETECTIONS} detections",
               "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "settings": {"deletion_step": step or "2% of the image", "deletion_baseline":
                            study.settings.deletion_baseline, "insertion_baseline": study.settings.insertion_baseline,
                            "pointing_tolerance_px": 15, "confidence": 0.95,
                            "interval": "percentile bootstrap, 2000 resamples", "layers": study.layers,
                            "options": study.options},
               "metric_order": list(METRICS), "better": BETTER, "methods": {}, "images": entries, "gallery": {},
               "gallery_limit": study.gallery}
    for method in study.methods:
        options = study.options.get(method, {})
        per, curves, scores = score_detections(explainer, jobs, method, study.layers, study.settings, options,
                                               progress)
        results["gallery"][method] = _gallery(out, method, scenes_of, jobs, scores, study.gallery)
        results["methods"][method] = {
            "options": options, "layers": study.layers, "metrics": summary(per, matched),
            "curves": {k: np.asarray(v).tolist() for k, v in curves.items()},
            "per_detection": {k: v.tolist() for k, v in per.items()}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    return results


def _gallery(out: Path, method: str, scenes: list, jobs: list, scores: list, limit: int) -> list[str]:
    files, k = [], 0
    for scene, (_, found) in zip(scenes, jobs):
        for index, (detection, truth) in enumerate(found):
            if k < limit:
                picture = images.overlay(scene.image, scores[k].map)
                if truth:
                    picture = images.draw_box(picture, truth, "truth", (0, 255, 0))
                picture = images.draw_box(picture, detection.box, f"{detection.label} {detection.score:.2f}")
                file = f"gallery/{method}/{scene.name}-{index}.png"
                images.write_png(out / file, picture)
                files.append(file)
            k += 1
    return files
