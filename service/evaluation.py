"""Scores one method's maps on a set of images with every metric; all perturbation forwards run batched."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from camserve.graph_tools import randomize as gr

from .errors import BadRequest
from .metrics import adcc, causal, confidence, localization, road, sanity
from .numeric import count, softmax

METRICS = ("average_drop", "increase_in_confidence", "average_gain", "coherency", "complexity", "adcc",
           "deletion_auc", "insertion_auc", "road", "arcc", "pointing_game", "energy_pointing_game",
           "seconds_per_image")
LOWER_IS_BETTER = {"average_drop", "complexity", "deletion_auc", "seconds_per_image"}
BETTER = {name: "lower" if name in LOWER_IS_BETTER else "higher" for name in METRICS}


@dataclass(frozen=True)
class Settings:
    deletion_step: int | None = None      # pixels per step; None: 8 rows (224 * 8 at 224, RISE's batch protocol)
    deletion_baseline: str = "zeros"      # what deleted pixels become; zeros: the dataset mean under mean/std inputs
    insertion_baseline: str = "blur"      # where insertion starts; blur = RISE's 11x11, sigma 5 Gaussian
    road_percentiles: tuple[int, ...] = road.PERCENTILES
    road_noise: float = 0.01
    tolerance: float = 15.0               # pointing game, in pixels
    seed: int = 0
    forward_batch: int = 32               # images per forward of the metrics' perturbed copies
    road: bool = True                     # ROAD's imputation is most of the metrics' cost; off: ROAD, ARCC NaN

    def __post_init__(self):
        for name in ("deletion_baseline", "insertion_baseline"):
            if getattr(self, name) not in causal.BASELINES:
                raise BadRequest(f"{name} must be one of {', '.join(causal.BASELINES)}, got {getattr(self, name)!r}",
                                 name)
        if self.deletion_step is not None and (isinstance(self.deletion_step, bool) or self.deletion_step < 1):
            raise BadRequest(f"deletion_step must be a positive number of pixels, got {self.deletion_step!r}",
                             "deletion_step")
        count(self.forward_batch, "forward_batch", "forward_batch")
        if not self.road_percentiles or any(not 0 < p < 100 for p in self.road_percentiles):
            raise BadRequest(f"road percentiles must lie in (0, 100), got {self.road_percentiles!r}",
                             "road_percentiles")

    def step(self, width: int) -> int:
        return self.deletion_step or 8 * width


@dataclass
class Scores:
    """One method on N images: every metric per image (NaN where an image has no boxes), the
    deletion/insertion curves, and what the explanation was."""
    per_image: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]          # "deletion", "insertion": (N, steps + 1); "fractions": (steps + 1,)
    maps: np.ndarray
    layers: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)


def class_probabilities(explainer, images: np.ndarray, labels: np.ndarray, batch: int = 32) -> np.ndarray:
    """Softmax probability of labels[i] on images[i], in runs of at most `batch` images."""
    return np.concatenate(_grouped_probabilities(explainer, ((images[i:i + 1], int(labels[i]))
                                                              for i in range(len(images))), batch))


def _grouped_probabilities(explainer, groups: Iterable[tuple[np.ndarray, int]], size: int = 32) -> list[np.ndarray]:
    """Per group (images (k, C, H, W), class) the class probabilities. Groups are packed into full runs
    of `size` images, so the device gets batches, never single images; the images of a run are
    dropped once it ran, so memory holds one run's worth whatever the number of groups."""
    pending, classes, probs, sizes = [], [], [], []

    def run(images: np.ndarray, owners: np.ndarray) -> None:
        probs.append(softmax(explainer.predict(images))[np.arange(len(owners)), owners])

    for images, label in groups:
        pending.append(images)
        classes.append(np.full(len(images), label))
        sizes.append(len(images))
        if sum(len(p) for p in pending) >= size:
            images, owners = np.concatenate(pending), np.concatenate(classes)
            whole = len(images) // size * size
            for start in range(0, whole, size):
                run(images[start:start + size], owners[start:start + size])
            pending, classes = [images[whole:]], [owners[whole:]]
    rest = np.concatenate(pending) if pending else np.empty(0)
    if len(rest):
        run(rest, np.concatenate(classes))
    return np.split(np.concatenate(probs), np.cumsum(sizes)[:-1]) if probs else []


def evaluate(explainer, x: np.ndarray, labels: np.ndarray, boxes: list, method: str, layers: list[str] | None = None,
             settings: Settings = Settings(), **options) -> Scores:
    """Explain x (N, C, H, W) for classes `labels` with `method`, re-explain the explanation images
    (Coherency), then score the maps."""
    labels = np.asarray(labels, np.int64)
    began = time.perf_counter()
    result = explainer.explain_full(x, method, labels, layers, **options)
    seconds = (time.perf_counter() - began) / len(x)
    remaps = explainer.explain_full(confidence.explanation_images(x, result.maps), method, labels, layers,
                                    **options).maps
    per_image, curves = score_maps(explainer, x, labels, boxes, result.maps, settings, remaps)
    per_image["seconds_per_image"] = np.full(len(x), seconds)
    return Scores(per_image, curves, result.maps, result.layers, dict(layers=result.layers or None, **result.options))


def score_maps(explainer, x: np.ndarray, labels: np.ndarray, boxes: list, maps: np.ndarray,
               settings: Settings = Settings(), remaps: np.ndarray | None = None) -> tuple[dict, dict]:
    """Every metric of (N, H, W) maps in [0, 1], whatever made them: per image arrays and the
    deletion/insertion curves. Coherency and ADCC need `remaps`, the same method's maps of the
    explanation images; without them they are NaN."""
    labels = np.asarray(labels, np.int64)
    scores: dict[str, np.ndarray] = {}
    batch = settings.forward_batch
    y = class_probabilities(explainer, x, labels, batch)
    o = class_probabilities(explainer, confidence.explanation_images(x, maps), labels, batch)
    scores["average_drop"] = confidence.average_drop(y, o)
    scores["increase_in_confidence"] = confidence.increase_in_confidence(y, o)
    scores["average_gain"] = confidence.average_gain(y, o)
    scores["coherency"] = adcc.coherency(maps, remaps) if remaps is not None else np.full(len(x), np.nan)
    scores["complexity"] = adcc.complexity(maps)
    scores["adcc"] = adcc.adcc(scores["average_drop"], scores["coherency"], scores["complexity"])

    step = settings.step(x.shape[-1])
    curves = {"fractions": causal.fractions(x.shape[-2] * x.shape[-1], step)}
    ranks = [causal.ranks(m) for m in maps]
    for kind, start, finish in (("deletion", x, causal.baseline(x, settings.deletion_baseline)),
                                ("insertion", causal.baseline(x, settings.insertion_baseline), x)):
        groups = ((causal.path(start[i], finish[i], ranks[i], step), labels[i]) for i in range(len(x)))
        curves[kind] = np.stack(_grouped_probabilities(explainer, groups, batch))
        scores[f"{kind}_auc"] = causal.auc(curves[kind])

    if settings.road:
        groups = ((road.perturbed(x[i:i + 1], maps[i:i + 1], settings.road_percentiles, settings.road_noise,
                                  settings.seed + i)[0], labels[i]) for i in range(len(x)))
        scores["road"] = road.combined(y, np.stack(_grouped_probabilities(explainer, groups, batch)))
    else:
        scores["road"] = np.full(len(x), np.nan)
    scores["arcc"] = adcc.arcc(scores["coherency"], scores["complexity"], scores["road"])

    scores["pointing_game"] = localization.pointing_game(maps, boxes, settings.tolerance)
    scores["energy_pointing_game"] = localization.energy_pointing_game(maps, boxes)
    return scores, curves


def sanity_check(explainer, x: np.ndarray, labels: np.ndarray, method: str, stages: int,
                 layers: list[str] | None = None, seed: int = 42, **options) -> list[dict]:
    """Cascading randomisation, top layer first: at each checkpoint the model with every weighted layer
    from the logits down to it redrawn, the method re-run, and the maps compared with the originals.
    A method that explains the model (not the image) loses its similarity as the cascade deepens."""
    from .explainer import Explainer
    labels = np.asarray(labels, np.int64)
    maps = explainer.explain_full(x, method, labels, layers, **options).maps
    curve = []
    graph = explainer.model.graph
    for stage, (deepest, randomised) in enumerate(gr.cascade(graph, stages), start=1):
        broken = Explainer(gr.randomize(graph, randomised, seed), explainer.runtime.providers,
                           explainer.runtime.threads, explainer.perturbation_budget)
        other = broken.explain_full(x, method, labels, layers, **options).maps
        curve.append({"stage": stage, "layer": deepest, "layers_randomised": len(randomised),
                      "spearman": float(sanity.spearman(maps, other).mean()),
                      "ssim": float(sanity.ssim(maps, other).mean())})
    return curve
