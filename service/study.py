"""An evaluation study: every chosen method over one dataset, summarised with 95% intervals and written out."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import images
from .evaluation import BETTER, METRICS, Settings, evaluate, sanity_check
from .metrics.summary import summarise


@dataclass
class Study:
    """What to run: the methods (with per-method options), the scenes, and how."""
    methods: list[str]
    options: dict[str, dict] = field(default_factory=dict)
    layers: list[str] | None = None
    settings: Settings = field(default_factory=Settings)
    batch: int = 8
    gallery: int = 12
    sanity_stages: int = 0
    sanity_images: int = 4


def run(explainer, config, scenes: list, study: Study, out: Path, target: str, dataset: str,
        progress: Callable[[int], None] = lambda done: None) -> dict:
    """Explain and score every scene with every method, write out/results.json, out/index.html,
    the inputs under out/images and overlays under out/gallery/<method>; returns the results dict.
    `progress(k)` is told each time k more images are done for a method."""
    from .report.html import write_report
    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([scene.label for scene in scenes], np.int64)

    def tensors(part: list) -> np.ndarray:   # a batch at a time: a large folder never sits in memory whole
        return np.concatenate([images.normalise(scene.image, config.preprocessing) for scene in part])

    entries = []
    for scene in scenes:
        file = f"images/{scene.name}.png"
        images.write_png(out / file, scene.image)
        entries.append({"name": scene.name, "kind": scene.kind, "label": int(scene.label),
                        "label_name": config.label(int(scene.label)), "boxes": [list(map(int, b)) for b in scene.boxes],
                        "size": list(scene.image.shape[:2]), "file": file})
    results = {"model": config.name, "dataset": dataset, "n": len(scenes), "provider": explainer.provider,
               # unset, ONNX Runtime runs one intra-op thread per core
               "threads": explainer.runtime.threads or os.cpu_count(),
               "target": target,
               "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "settings": _settings(study), "metric_order": list(METRICS),
               "better": {**BETTER, "adcc_per_image": "higher"},
               "methods": {}, "images": entries, "gallery": {}, "gallery_limit": study.gallery}
    for method in study.methods:
        options = study.options.get(method, {})
        # graphs and sessions are built on first use: built here, so seconds_per_image is the method's alone
        explainer.explain_full(tensors(scenes[:1]), method, labels[:1], study.layers, **options)
        parts = []
        for start in range(0, len(scenes), study.batch):
            stop = min(len(scenes), start + study.batch)
            # ROAD's noise seeded per image, whatever the batch size
            settings = dataclasses.replace(study.settings, seed=study.settings.seed + start)
            parts.append(evaluate(explainer, tensors(scenes[start:stop]), labels[start:stop],
                                  [s.boxes for s in scenes[start:stop]], method, study.layers, settings, **options))
            parts[-1].maps = parts[-1].maps[:max(0, study.gallery - start)]   # only the gallery's are kept
            progress(stop - start)
        per_image = {k: np.concatenate([p.per_image[k] for p in parts]) for k in METRICS}
        curves = {k: np.concatenate([p.curves[k] for p in parts]) for k in ("deletion", "insertion")}
        maps = np.concatenate([p.maps for p in parts])
        results["gallery"][method] = _gallery(out, method, scenes[:study.gallery], maps)
        kinds = np.array([scene.kind for scene in scenes])
        entry = {"options": parts[0].options, "layers": parts[0].layers, "metrics": summarise(per_image),
                 "by_kind": {kind: summarise({k: v[kinds == kind] for k, v in per_image.items()})
                             for kind in dict.fromkeys(kinds)},
                 "curves": {"fractions": parts[0].curves["fractions"].tolist(),
                            **{k: v.mean(0).tolist() for k, v in curves.items()}},
                 "per_image": {k: [None if np.isnan(v) else float(v) for v in values]
                               for k, values in per_image.items()}}
        if study.sanity_stages:
            count = min(study.sanity_images, len(scenes))
            entry["sanity"] = sanity_check(explainer, tensors(scenes[:count]), labels[:count], method,
                                           study.sanity_stages, study.layers, **options)
        results["methods"][method] = entry
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    return results


def _gallery(out: Path, method: str, scenes: list, maps: np.ndarray) -> list[str]:
    files = []
    for scene, cam in zip(scenes, maps):
        file = f"gallery/{method}/{scene.name}.png"
        images.write_png(out / file, images.overlay(scene.image, cam))
        files.append(file)
    return files


def _settings(study: Study) -> dict:
    s = study.settings
    return {"deletion_step": s.deletion_step or "8 rows", "deletion_baseline": s.deletion_baseline,
            "insertion_baseline": s.insertion_baseline, "road_percentiles": list(s.road_percentiles),
            "road_noise": s.road_noise, "road": s.road, "pointing_tolerance_px": s.tolerance, "seed": s.seed,
            "confidence": 0.95, "interval": "percentile bootstrap, 2000 resamples", "batch": study.batch,
            "layers": study.layers, "options": study.options,
            "sanity": {"stages": study.sanity_stages, "images": study.sanity_images} if study.sanity_stages else None}
