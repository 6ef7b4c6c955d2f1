"""The Explainer: a Model, a Runtime and the methods: explain / predict on any ONNX CNN."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from camserve import graph_tools as gt

from . import postprocess
from .errors import BadRequest
from .methods import DEFAULT, Method, lookup
from .model import Model
from .numeric import count, one_blas_thread
from .runs import Context, Result
from .runtime import Runtime


@dataclass
class Explanation:
    maps: np.ndarray                       # (N, H, W) float32 in [0, 1]
    method: str
    layers: list[str]
    targets: np.ndarray                    # (N,) the class each map explains (argmax of its weight row)
    logits: np.ndarray
    fusion: str
    layer_maps: dict[str, np.ndarray] = field(default_factory=dict)   # raw (N, h, w) per layer
    class_maps: np.ndarray | None = None   # (N, classes, h, w) raw maps of every class, where a run gives them
    options: dict = field(default_factory=dict)   # every option the method ran with, defaults included


class Explainer:
    """CAM explanations for one ONNX image model.

    model: a Model, or what builds one (a .onnx file, a model folder with its config.json, bytes, a
    ModelProto). Rewritten graphs are built on first use and their sessions cached by the Runtime
    (at most `max_sessions`). Perturbation methods run at most `perturbation_budget` images' worth of
    perturbed tensors per run.
    """

    def __init__(self, model: Model | str | Path | bytes | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, perturbation_budget: int = 32, max_sessions: int | None = None):
        self.perturbation_budget = count(perturbation_budget, "perturbation_budget", "perturbation_budget")
        self.model = model if isinstance(model, Model) else Model(model)
        bound = {} if max_sessions is None else {"max_sessions": max_sessions}   # None: the Runtime's default
        self.runtime = Runtime(providers, threads, **bound)
        self._context = Context(self.model, self.runtime, self.perturbation_budget)
        self._context.warm()   # the plain session now, so that `provider` tells the truth from the start

    # -- what the model is ---------------------------------------------------------------------
    @property
    def info(self) -> gt.ModelInfo:
        return self.model.info

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
        """Logits (N, classes) of a preprocessed float32 (N, C, H, W) batch."""
        return self._context.logits(self.check_input(x))

    # -- explain ------------------------------------------------------------------------------
    def explain(self, x: np.ndarray, method: str = DEFAULT, targets=None, layers: list[str] | None = None,
                fusion: str | None = None, return_layers: bool = False, **options):
        """Maps (N, H, W) in [0, 1]; with return_layers, also {layer: raw (N, h, w) map}."""
        result = self.explain_full(x, method, targets, layers, fusion, **options)
        return (result.maps, result.layer_maps) if return_layers else result.maps

    def explain_full(self, x: np.ndarray, method: str = DEFAULT, targets=None, layers: list[str] | None = None,
                     fusion: str | None = None, **options) -> Explanation:
        """explain, with the targets, logits, layers and options it ran with. targets: class ids, one per
        image or one for all, or (N, classes) class-weight rows (an all-zero row: that image's top-1)."""
        x = self.check_input(x)
        return self.explain_rows(x, self.class_rows(targets, len(x)), method, layers, fusion, **options)

    def explain_rows(self, x: np.ndarray, rows: np.ndarray, method: str = DEFAULT, layers: list[str] | None = None,
                     fusion: str | None = None, **options) -> Explanation:
        """explain_full for an input and class rows already checked (by check_input and class_rows)."""
        spec = lookup(method)
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
                return self._maps(spec, result, x.shape[-2:], fusion, options)
        except gt.GraphError as error:
            raise BadRequest(str(error), "layers") from error

    def _maps(self, spec: Method, result: Result, size: tuple[int, int], fusion: str, options: dict) -> Explanation:
        targets = result.rows.argmax(1)
        if not spec.per_layer:
            return Explanation(spec.layer_map(result.evidence, options), spec.name, [], targets, result.logits, "sum",
                               options=options)
        relu = bool(options.get("relu", spec.relu))
        raw, scaled, weights = {}, [], []
        for ev in result.evidence:
            raw[ev.name] = spec.layer_map(ev, options)
            scaled.append(postprocess.scale(raw[ev.name], size, relu=relu))
            if fusion == "adaptive":
                weights.append(postprocess.layer_evidence(*ev.fusion_evidence()))
        maps = postprocess.fuse(scaled, fusion, weights, options.get("temperature", 1.0), options.get("tanh", False))
        class_maps = result.evidence[0].extras.get("class_maps") if len(result.evidence) == 1 else None
        return Explanation(maps, spec.name, list(raw), targets, result.logits, fusion, raw, class_maps, options)
