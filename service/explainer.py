"""The Explainer: a Model, a Runtime and the methods: explain / predict on any ONNX CNN."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from camserve import graph_tools as gt

from . import detection, postprocess
from . import targets as targets_
from .errors import BadRequest
from .methods import DEFAULT, METHODS, Method, lookup
from .model import Model
from .numeric import count, minmax, one_blas_thread
from .runs import Context, Result
from .runtime import Runtime


@dataclass
class Explanation:
    maps: np.ndarray                       # (N, H, W) float32 in [0, 1]
    method: str
    layers: list[str]
    targets: np.ndarray                    # (N,) the class each map explains (argmax of its weight row; for
    #                                        targets of camserve.targets, their class, -1 for a similarity)
    logits: np.ndarray
    fusion: str
    layer_maps: dict[str, np.ndarray] = field(default_factory=dict)   # raw (N, h, w) per layer
    class_maps: np.ndarray | None = None   # (N, classes, h, w) raw maps of every class, where a run gives them
    options: dict = field(default_factory=dict)   # every option the method ran with, defaults included
    target_objects: list | None = None     # per image, the camserve.targets it explains (None: class rows)
    warnings: list[str] = field(default_factory=list)   # per map, why it came back blank ("" where it did not)


class Explainer:
    """CAM explanations for one ONNX image model.

    model: a Model, or what builds one (a .onnx file, a model folder with its config.json, bytes, a
    ModelProto); `declared` are Model's keywords (output="logits", kind, head, labels, preprocessing, ...). Rewritten
    graphs are built on first use and their sessions cached by the Runtime
    (at most `max_sessions`). Perturbation methods run at most `perturbation_budget` images' worth of
    perturbed tensors per run.
    """

    def __init__(self, model: Model | str | Path | bytes | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, perturbation_budget: int = 32, max_sessions: int | None = None,
                 **declared):
        self.perturbation_budget = count(perturbation_budget, "perturbation_budget", "perturbation_budget")
        if isinstance(model, Model) and declared:
            raise BadRequest(f"declare {', '.join(declared)} when building the Model, not on an Explainer of one",
                             "model")
        self.model = model if isinstance(model, Model) else Model(model, **declared)
        bound = {} if max_sessions is None else {"max_sessions": max_sessions}   # None: the Runtime's default
        self.runtime = Runtime(providers, threads, **bound)
        self._context = Context(self.model, self.runtime, self.perturbation_budget)
        self._context.warm()   # the plain session now, so that `provider` tells the truth from the start

    # -- what the model is ---------------------------------------------------------------------
    @property
    def info(self) -> gt.ModelInfo:
        return self.model.info

    @property
    def kind(self) -> str:
        """classifier, segmenter, detector or embedding: what the model's output is read as."""
        return self.model.kind

    @property
    def provider(self) -> str:
        return self.runtime.providers[0] if self.runtime.providers else ""

    def layers(self) -> list[gt.Layer]:
        return self.model.layers()

    def check_input(self, x) -> np.ndarray:
        return self.model.check_input(x)

    def class_rows(self, targets, n: int) -> np.ndarray:
        return self.model.class_rows(targets, n)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The output targets weigh (a classifier's logits (N, classes)) of a preprocessed float32 (N, C, H, W)
        batch."""
        return self._context.logits(self.check_input(x))

    def detect(self, x: np.ndarray, score: float = 0.25, iou: float = 0.45, max_det: int = 300
               ) -> list[list[targets_.Detection]]:
        """A detector's detections per image, best first: class-aware NMS over the raw head's boxes whose class
        score (times objectness) is at least `score` (an NMS graph's own detections above `score`). Each is a
        valid target: explain(x, method, targets=[[d1, d2]]) maps them."""
        if self.kind != "detector":
            raise BadRequest(f"detect() is for detectors; this model is a {self.kind}", "model")
        for name, value, low, high in (("score", score, 0.0, 1.0), ("iou", iou, 0.0, 1.0)):
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise BadRequest(f"{name} must be in [{low}, {high}], got {value!r}", name)
        max_det = count(max_det, "max_det", "max_det")
        return [self._detections(out, score, iou, max_det) for out in self.predict(x)]

    def detection_for(self, output: np.ndarray, target) -> targets_.Detection | None:
        """The detection a target scores in one image's output: a Detection with its anchor as it is, a Box's
        chosen anchor as a Detection; None for targets of other kinds."""
        if isinstance(target, targets_.Detection) and target.anchor is not None:
            return target
        anchor = None if target is None else target.anchor_in(output, self.model)
        if anchor is None:
            return None
        boxes, scores, objectness = self.model.head.decode(output)
        class_id = target.class_id if target.class_id is not None else int(scores[anchor].argmax())
        return targets_.Detection(tuple(float(v) for v in boxes[anchor]), class_id,
                                  float(scores[anchor, class_id] * objectness[anchor]), anchor,
                                  label=self.model.label(class_id))

    def _detections(self, output: np.ndarray, score: float, iou: float, max_det: int) -> list[targets_.Detection]:
        head = self.model.head
        boxes, classes, scores = head.scores(output)
        keep = np.flatnonzero(scores >= score)
        if head.layout != "nms":
            keep = keep[detection.nms(boxes[keep], scores[keep], classes[keep], iou)]
        else:
            keep = keep[np.argsort(-scores[keep], kind="stable")]
        return [targets_.Detection(tuple(float(v) for v in boxes[a]), int(classes[a]), float(scores[a]), int(a),
                                   label=self.model.label(int(classes[a]))) for a in keep[:max_det]]

    # -- explain ------------------------------------------------------------------------------
    def explain(self, x: np.ndarray, method: str = DEFAULT, targets=None, layers: list[str] | None = None,
                fusion: str | None = None, return_layers: bool = False, **options):
        """Maps (N, H, W) in [0, 1]; with return_layers, also {layer: raw (N, h, w) map}."""
        result = self.explain_full(x, method, targets, layers, fusion, **options)
        return (result.maps, result.layer_maps) if return_layers else result.maps

    def explain_full(self, x: np.ndarray, method: str = DEFAULT, targets=None, layers: list[str] | None = None,
                     fusion: str | None = None, in_box: bool = False, **options) -> Explanation:
        """explain, with the targets, logits, layers and options it ran with.

        in_box (detectors): each map zeroed outside its detection's box and min-maxed inside it, then over the
        image (pytorch-grad-cam's renormalize_cam_in_bounding_boxes, the Eigen-CAM-for-YOLO recipe).

        targets, for a classifier: class ids, one per image or one for all, or (N, classes) class-weight rows (an
        all-zero row: that image's top-1). For any model: camserve.targets, one per image (or one for all), or a
        list per image (T each): the maps are then (N, T, H, W). Defaults: a classifier's top-1 class, a
        detector's top detection, a segmenter's most predicted class; an embedding needs a Similarity.
        """
        x = self.check_input(x)
        if in_box and self.kind != "detector":
            raise BadRequest(f"in_box renormalises a detection's map inside its box; this model is a {self.kind}",
                             "in_box")
        if self.kind == "classifier" and not targets_.has_objects(targets):
            return self.explain_rows(x, self.class_rows(targets, len(x)), method, layers, fusion, **options)
        spec = self.method_for_kind(method)
        picks_layers = layers is None and self.kind == "detector" and spec.run.target_layers
        chosen = None   # a method that needs no target, where none is given nor needed to pick its layer
        if targets is not None or spec.run.targeted or picks_layers:
            try:
                chosen = self._targets(x, targets)
            except BadRequest:
                if targets is not None or spec.run.targeted:
                    raise   # else: no default target (a detector that found nothing), and a method that needs none
        # the forward that targets read (a Box's overlaps, a Region's predicted pixels); for class ids and
        # detections with their anchor only the output's shape
        needed = chosen is not None and any(t.needs_output for row in chosen for t in row)
        output = self.predict(x) if needed else self._output_like(x)
        if chosen is None:
            weights, chosen = np.zeros((len(x), 1, *output.shape[1:]), np.float32), [[None]] * len(x)
        else:
            weights = self._weights(output, chosen)
        if picks_layers and chosen[0][0] is not None:
            layers, picks = self._scale_layers(x, output, chosen)
        else:
            picks = None
        t = len(chosen[0])
        if t == 1 or spec.run.seeds:
            rows = weights if t > 1 else weights[:, 0]
            result = self.explain_rows(x, rows, method, layers, fusion, _picks=picks, **options)
        else:   # one run per target where the run kind takes one target per image
            parts = [self.explain_rows(x, weights[:, k], method, layers, fusion,
                                       _picks=None if picks is None else picks[k::t], **options) for k in range(t)]
            result = parts[0]
            result.maps = np.stack([p.maps for p in parts], axis=1).reshape(-1, *parts[0].maps.shape[1:])
            result.warnings = [p.warnings[i] for i in range(len(x)) for p in parts]
        if in_box:
            result.maps = self._in_boxes(result.maps, output, chosen)
        result.maps = result.maps.reshape(len(x), t, *result.maps.shape[1:]) if t > 1 else result.maps
        result.targets = np.array([getattr(c, "class_id", -1) for row in chosen for c in row]).reshape(
            (len(x), t) if t > 1 else (len(x),))
        result.target_objects = chosen if t > 1 else [row[0] for row in chosen]
        return result

    def _in_boxes(self, maps: np.ndarray, output: np.ndarray, chosen: list[list]) -> np.ndarray:
        """(N*T, H, W) maps, each min-maxed inside its detection's box (in whole pixels) and 0 outside, then
        min-maxed again."""
        if chosen[0][0] is None:
            raise BadRequest("in_box needs a detection to renormalise in; give a target", "in_box")
        height, width = maps.shape[-2:]
        boxed = np.zeros_like(maps)
        found = [self.detection_for(out, t) for out, row in zip(output, chosen) for t in row]
        for cam, into, d in zip(maps, boxed, found):
            x0, y0 = (max(int(v), 0) for v in d.box[:2])
            x1, y1 = min(int(d.box[2]), width), min(int(d.box[3]), height)
            if x1 > x0 and y1 > y0:
                into[y0:y1, x0:x1] = minmax(cam[y0:y1, x0:x1])
        return minmax(boxed)

    def _targets(self, x: np.ndarray, given) -> list[list[targets_.Target]]:
        """Per image the list of its targets (T each), the kind's default where none are given."""
        n = len(x)
        if given is None:
            return [[t] for t in self._default_targets(x)]
        if isinstance(given, targets_.Target):
            given = [given] * n
        if not isinstance(given, (list, tuple)) or len(given) != n:
            raise BadRequest(f"give one target per image ({n}), or a list of targets per image", "targets")
        rows = [list(t) if isinstance(t, (list, tuple)) else [t] for t in given]
        if len({len(r) for r in rows}) != 1 or not rows[0]:
            raise BadRequest("every image needs the same number of targets (at least one)", "targets")
        for row in rows:
            for t in row:
                if not isinstance(t, targets_.Target):
                    raise BadRequest(f"a {self.kind}'s targets are camserve.targets objects "
                                     f"({', '.join(targets_.KINDS_OF[self.kind])}), got {t!r}", "targets")
                targets_.check_kind(t, self.kind)
        return rows

    def _default_targets(self, x: np.ndarray) -> list[targets_.Target]:
        if self.kind == "detector":
            found = self.detect(x)
            if not all(found):
                raise BadRequest("no detection with score >= 0.25 in an image; give a Box or Detection target",
                                 "targets")
            return [d[0] for d in found]
        if self.kind == "segmenter":
            out = self.predict(x)
            if out.shape[1] == 1:
                return [targets_.Region(0)] * len(x)
            return [targets_.Region(int(np.bincount(o.argmax(0).ravel()).argmax())) for o in out]
        raise BadRequest("an embedding needs a Similarity(vector) target", "targets")

    def method_for_kind(self, method: str) -> Method:
        """The method's spec, or BadRequest where it does not explain this model's kind."""
        spec = lookup(method)
        if self.kind not in spec.kinds:
            what = "scores classes only" if spec.kinds == ("classifier",) else f"explains {', '.join(spec.kinds)}s"
            raise BadRequest(f"{method!r} {what}; on a {self.kind} use one of: "
                             f"{', '.join(m for m in _methods_for(self.kind))}", "method")
        return spec

    def _output_like(self, x: np.ndarray) -> np.ndarray:
        """Zeros shaped like the output of x, from the graph's shapes where the input's size is fixed, or from a
        raw head's scales at x's size (a forward where neither says)."""
        shape = self.info.output_shape[1:]
        if all(isinstance(d, int) for d in (*shape, *self.info.spatial)):
            return np.zeros((len(x), *shape), np.float32)
        if self.info.head in ("yolov8", "yolov5") and self.info.scales and isinstance(self.info.num_classes, int):
            anchors = int(sum(self._anchors_per_scale(x)))
            extent = self.info.num_classes + (4 if self.info.head == "yolov8" else 5)
            return np.zeros((len(x), extent, anchors) if self.info.head == "yolov8" else (len(x), anchors, extent),
                            np.float32)
        return self.predict(x)

    def _anchors_per_scale(self, x: np.ndarray) -> list[int]:
        """Each head scale's anchors for an input of x's size (inspect counted them at its probe size where the
        model's input size is left open)."""
        h, w = (x.shape[a] for a in self.info.spatial_axes)
        return [-(-h // stride) * -(-w // stride) for stride, _, _ in self.info.scales]

    def _weights(self, output: np.ndarray, chosen: list[list[targets_.Target]]) -> np.ndarray:
        """W (N, T, *output): each target's weights at its image's output."""
        return np.stack([np.stack([t.weights(out, self.model) for t in row]) for out, row in zip(output, chosen)])

    def _scale_layers(self, x: np.ndarray, output: np.ndarray,
                      chosen: list[list[targets_.Target]]) -> tuple[list[str] | None, list[str] | None]:
        """A detector's layers when the caller names none: each detection's map at the branch layer of the head
        scale that predicted it (ODAM's choice); the model's default layer where the anchor is unknown; after an
        in-graph NMS, every scale's branch layer, fused."""
        scales = self.info.scales
        if not scales:
            return None, None
        if self.info.head == "nms":   # NMS hides which anchor (so which scale) a detection came from: every
            return [layer for _, _, layer in scales], None   # scale's branch, fused (the others' maps are 0)
        ends = np.cumsum(self._anchors_per_scale(x))
        picks = []
        for out, row in zip(output, chosen):
            for t in row:
                anchor = t.anchor_in(out, self.model)
                if anchor is None:
                    picks.append(self.model.default_layer)
                else:
                    picks.append(scales[min(int(np.searchsorted(ends, anchor, side="right")), len(scales) - 1)][2])
        layers = list(dict.fromkeys(picks))
        return layers, picks

    def explain_rows(self, x: np.ndarray, rows: np.ndarray, method: str = DEFAULT, layers: list[str] | None = None,
                     fusion: str | None = None, _picks: list[str] | None = None, **options) -> Explanation:
        """explain_full for an input and class rows already checked (by check_input and class_rows), or target
        weights (N, [T,] *output). _picks: per map, the one layer it is taken at (no fusion)."""
        spec = self.method_for_kind(method)
        options = spec.bind(options)
        fusion = fusion or spec.fusion
        if fusion not in postprocess.FUSIONS:
            raise BadRequest(f"unknown fusion {fusion!r}; choose one of {', '.join(postprocess.FUSIONS)}", "fusion")
        if fusion == "adaptive" and not spec.gradients:
            raise BadRequest(f"adaptive fusion weighs layers by their gradients; {method!r} has none", "fusion")
        try:   # the one place a graph that cannot be rewritten at the asked layers becomes the caller's error
            layers = spec.run.layers(self.model, layers)
            result = spec.run(self._context, x, rows, layers, options)
            with one_blas_thread():
                explanation = self._maps(spec, result, x.shape[-2:], fusion, options, _picks)
            explanation.warnings = blank_map_warnings(explanation.maps, result, spec.gradients)
            return explanation
        except gt.GraphError as error:
            raise BadRequest(str(error), "layers") from error

    def _maps(self, spec: Method, result: Result, size: tuple[int, int], fusion: str, options: dict,
              picks: list[str] | None = None) -> Explanation:
        targets = result.rows.reshape(len(result.rows), -1).argmax(1)
        if not spec.per_layer:
            return Explanation(spec.layer_map(result.evidence, options), spec.name, [], targets, result.logits, "sum",
                               options=options)
        relu = bool(options.get("relu", spec.relu))
        raw, scaled, weights = {}, [], []
        for ev in result.evidence:
            raw[ev.name] = spec.layer_map(ev, options)
            scaled.append(postprocess.scale(raw[ev.name], size, relu=relu))
            if fusion == "adaptive":   # reduced inside the graph where the run did (ConvBlockMap)
                weights.append(ev.share if hasattr(ev, "share") else postprocess.layer_evidence(*ev.fusion_evidence()))
        if picks is not None:   # each map at its own layer, min-maxed again as one layer's "fusion" is
            names = list(raw)
            maps = postprocess.fuse([np.stack([scaled[names.index(layer)][r] for r, layer in enumerate(picks)])])
            fusion = "own scale"
        else:
            maps = postprocess.fuse(scaled, fusion, weights, options.get("temperature", postprocess.TEMPERATURE),
                                    options.get("tanh", False))
        class_maps = result.evidence[0].extras.get("class_maps") if len(result.evidence) == 1 else None
        return Explanation(maps, spec.name, list(raw), targets, result.logits, fusion, raw, class_maps, options)


def _methods_for(kind: str) -> list[str]:
    return sorted(name for name, spec in METHODS.items() if kind in spec.kinds)


def blank_map_warnings(maps: np.ndarray, result: Result, gradients: bool) -> list[str]:
    """Per map, why it is blank (all zero) where it is, so that no explanation fails silently: the model's output
    is not finite; the target's gradient at every layer is zero; or the method's weighted sum is nowhere positive
    (ReLU leaves nothing); or, for a method without gradients, the scores it weighs did not move."""
    flat = maps.reshape(len(maps), -1)
    blank = np.flatnonzero(flat.max(axis=1) <= 0) if len(flat) else []
    warnings = [""] * len(maps)
    if not len(blank):
        return warnings
    logits = np.asarray(result.logits)
    evidence = result.evidence if isinstance(result.evidence, list) else []
    layers = ", ".join(ev.name for ev in evidence) or "the input"
    grads = [ev.mass[:, None] if hasattr(ev, "mass") else ev.fusion_evidence()[1]
             for ev in evidence if hasattr(ev, "mass") or hasattr(ev, "fusion_evidence")]
    for r in blank:
        if not np.isfinite(logits).all():
            warnings[r] = "blank map: the model's output is not finite for this input"
        elif gradients and grads and all(g.size % len(maps) == 0 and not np.any(g.reshape(len(maps), -1)[r])
                                         for g in grads):
            warnings[r] = (f"blank map: the target's gradient is zero at {layers} (the target does not depend on "
                           "the layer, e.g. another head scale's branch, or its activations are saturated)")
        elif gradients:
            warnings[r] = (f"blank map: the gradient-weighted sum of the activations at {layers} is nowhere positive, "
                           "so ReLU leaves nothing; element-wise methods (hirescam, layercam) or relu=False show "
                           "what is there")
        else:
            warnings[r] = ("blank map: the scores this method weighs did not change with its perturbations (an "
                           "output near zero or saturated for this target)")
    return warnings

