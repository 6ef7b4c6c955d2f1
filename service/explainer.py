"""The Explainer: joins graph_tools, the runtime and the methods into explain / predict on any ONNX CNN."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from threadpoolctl import ThreadpoolController

from camserve import graph_tools as gt
from camserve.graph_tools import masks as gm

from . import postprocess
from .errors import BadRequest
from .methods import METHODS, Evidence, Method
from .methods.smooth import noisy_copies
from .probe import GraphProbe
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


@dataclass
class RunEvidence:
    """Everything one run produced, for methods that build the final map themselves (FullGrad)."""
    x: np.ndarray
    logits: np.ndarray
    class_weights: np.ndarray
    layers: list[Evidence]
    input_grad: np.ndarray | None = None
    probe: GraphProbe | None = None


class Explainer:
    """CAM explanations for one ONNX image classifier.

    Rewritten graphs (forward with exposed layers, gradient graphs, mask-injection graphs) are built
    on first use and their ONNX Runtime sessions cached per (graph kind, layers). Perturbation
    methods run at most `max_batch` images' worth of perturbed tensors per run.
    """

    def __init__(self, model: str | Path | bytes | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, max_batch: int = 32):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise BadRequest(f"max_batch must be an integer >= 1, got {max_batch!r}", "max_batch")
        self.max_batch = max_batch
        _one_blas_thread()
        try:
            folded = gt.fold_constants(gt.copy(gt.load(model)))
            self.info = gt.inspect(folded)
        except gt.GraphError as error:
            raise BadRequest(str(error), "model") from error
        except Exception as error:  # a corrupt protobuf or a missing file
            raise BadRequest(f"cannot load the model: {error}", "model") from error
        # the only copy kept: every rewritten graph starts from it (weights are large, copies add up)
        self.model = gt.make_batch_dynamic(folded)
        self.runtime = Runtime(providers, threads)
        self._forward([])  # builds the plain session now, so `provider` tells the truth from the start

    # -- what the model is ---------------------------------------------------------------------
    @property
    def provider(self) -> str:
        return self.runtime.providers[0] if self.runtime.providers else ""

    def layers(self) -> list[gt.Layer]:
        return list(self.info.layers)

    @cached_property
    def _bias_terms(self) -> dict[str, np.ndarray]:
        return dict(gt.bias_terms(self.model, self.info))

    @cached_property
    def _conv_blocks(self) -> dict[str, tuple[str, np.ndarray]]:
        return {post: (pre, bias) for pre, post, bias in gt.conv_blocks(self.model, self.info)}

    @lru_cache(maxsize=8)  # noqa: B019 -- the Explainer lives as long as its cache should
    def _classifier(self, layer: str) -> np.ndarray:
        return gt.classifier_weights(self.model, layer)

    @lru_cache(maxsize=32)  # noqa: B019
    def tail_inputs(self, layer: str) -> tuple[str, ...]:
        """The tensors a tail graph at `layer` is fed (the layer first)."""
        return tuple(gm.tail_inputs(self.model, layer, self.info))

    @lru_cache(maxsize=32)  # noqa: B019
    def pooled(self, layer: str) -> bool:
        return gm.pooled_by(self.model, layer) is not None

    def tail_graph(self, kind: str, layer: str, logits: bool, fill: bool) -> onnx.ModelProto:
        if kind == "channel":
            return gm.channel_tail(self.model, layer, logits, self.info, fill)
        return gm.mosaic_tail(self.model, layer, logits, self.info)

    def input_graph(self, normalise: bool, logits: bool, baseline: bool) -> onnx.ModelProto:
        return gm.masked_inputs(self.model, normalise, logits, baseline, self.info)

    # -- runs ---------------------------------------------------------------------------------
    def feed(self, x: np.ndarray) -> np.ndarray:
        """A NCHW batch in the layout the model's input takes."""
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.info.layout == "NHWC" else x

    def _base(self, x: np.ndarray) -> tuple[tuple, Callable[[], onnx.ModelProto]]:
        """The graph to differentiate for this input, and its cache-key part: models with symbolic H
        and W get a static-size copy per input size (transposed convolutions need static sizes)."""
        if all(isinstance(d, int) for d in self.info.spatial):
            return (), lambda: self.model
        size = tuple(x.shape[2:])
        return (size,), lambda: gt.fix_spatial_size(self.model, *size, self.info)

    def _forward(self, layers: list[str], x: np.ndarray | None = None) -> dict:
        key = ("forward", tuple(layers))
        build = lambda: gt.expose(self.model, [self.info.logits, *layers])  # noqa: E731
        if x is None:
            self.runtime.session(key, build)
            return {}
        return self.runtime.run(key, build, {self.info.input_name: self.feed(x)})

    def _gradients(self, layers: list[str], x: np.ndarray, rows: np.ndarray, input_gradient: bool,
                   activations: list[str] | None = None) -> dict:
        size, base = self._base(x)
        shown = tuple(layers if activations is None else activations)
        key = ("gradients", tuple(layers), input_gradient, shown, *size)
        build = lambda: gt.add_gradients(base(), layers, input_gradient, activations, self.info)  # noqa: E731
        try:
            out = self.runtime.run(key, build, {self.info.input_name: self.feed(x), gt.CLASS_WEIGHTS: rows})
        except gt.GraphError as error:  # the graph cannot be differentiated at these layers
            raise BadRequest(str(error), "layers") from error
        out[self.info.logits] = out[gt.LOGITS]
        grad_x = out.get(gt.GRAD_PREFIX + self.info.input_name)
        if grad_x is not None and self.info.layout == "NHWC":
            out[gt.GRAD_PREFIX + self.info.input_name] = grad_x.transpose(0, 3, 1, 2)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a preprocessed float32 (N, C, H, W) batch."""
        x = self.check_input(x)
        return self._forward([], x)[self.info.logits]

    # -- explain ------------------------------------------------------------------------------
    def explain(self, x: np.ndarray, method: str = "gradcam", targets=None, layers: list[str] | None = None,
                fusion: str | None = None, return_layers: bool = False, **options):
        """Maps (N, H, W) in [0, 1]; with return_layers, also {layer: raw (N, h, w) map}."""
        result = self.explain_full(x, method, targets, layers, fusion, **options)
        return (result.maps, result.layer_maps) if return_layers else result.maps

    def explain_full(self, x: np.ndarray, method: str = "gradcam", targets=None, layers: list[str] | None = None,
                     fusion: str | None = None, **options) -> Explanation:
        spec = self._method(method)
        try:
            options = spec.bind(options)
        except (KeyError, TypeError) as error:
            raise BadRequest(error.args[0], "options") from error
        relu = bool(options.get("relu", spec.relu))
        fusion = fusion or spec.fusion
        if fusion not in postprocess.FUSIONS:
            raise BadRequest(f"unknown fusion {fusion!r}; choose one of {', '.join(postprocess.FUSIONS)}", "fusion")
        if fusion == "adaptive" and not spec.needs.gradients:
            raise BadRequest(f"adaptive fusion weighs layers by their gradients; {method!r} has none", "fusion")
        x = self.check_input(x)
        rows = self.class_rows(targets, len(x))
        targets_layers = self._target_layers(spec, layers)
        run = self._run(spec, x, rows, targets_layers, options)
        size = x.shape[-2:]
        if not spec.per_layer:
            maps = _layer_map(spec, run, options)
            return Explanation(maps, method, [], run.class_weights.argmax(1), run.logits, "sum", options=options)
        raw, scaled, evidence = {}, [], []
        for ev in run.layers:
            raw[ev.name] = _layer_map(spec, ev, options)
            scaled.append(postprocess.scale(raw[ev.name], size, relu=relu))
            if fusion == "adaptive":
                acts, grads = (ev.acts[0], ev.grads[0]) if spec.needs.noisy_copies else (ev.acts, ev.grads)
                evidence.append(postprocess.layer_evidence(acts, grads))
        maps = postprocess.fuse(scaled, fusion, evidence, options.get("temperature", 1.0), options.get("tanh", False))
        class_maps = run.layers[0].extras.get("class_maps") if len(run.layers) == 1 else None
        return Explanation(maps, method, [ev.name for ev in run.layers], run.class_weights.argmax(1),
                           run.logits, fusion, raw, class_maps, options)

    def _run(self, spec: Method, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> RunEvidence:
        needs = spec.needs
        if needs.layers == "conv":
            pres = [self._conv_blocks[name][0] for name in layers]
            graph_layers = list(dict.fromkeys(layers + pres))
        else:
            graph_layers = layers
        try:
            fed = [t for name in layers for t in self.tail_inputs(name)] if needs.masks in ("channel", "mosaic") else []
        except gt.GraphError as error:
            raise BadRequest(str(error), "layers") from error
        if not needs.gradients:
            out = self._forward(list(dict.fromkeys(graph_layers + fed)), x)
            logits = out[self.info.logits]
            rows = _resolve_top1(rows, logits)
        elif needs.noisy_copies:
            if not rows.any(axis=1).all():
                rows = _resolve_top1(rows, self._forward([], x)[self.info.logits])
            try:
                batch = noisy_copies(x, options["samples"], options["std"], options["seed"], options["noise"])
            except ValueError as error:
                raise BadRequest(str(error), "options") from error
            copies = len(batch) // len(x)
            out = self._gradients(graph_layers, batch, np.tile(rows, (copies, 1)), False)
            out = {k: v.reshape(copies, len(x), *v.shape[1:]) for k, v in out.items()}
            logits = out[self.info.logits][0]
        else:  # FullGrad reads only gradients: its activations need not leave the run
            shown = [] if needs.layers == "bias" else layers
            out = self._gradients(graph_layers, x, rows, needs.input_gradient, shown)
            logits = out[self.info.logits]
            rows = _resolve_top1(rows, logits)
        missing = [name for name in fed if name not in out]
        if missing:  # a gradient run shows the layers; the tail also reads tensors around them
            out.update(self._forward(missing, x))
        classifier = self._classifier(layers[0]) if needs.classifier else None
        evidence = []
        for name in layers:
            ev = Evidence(name, out.get(name), out.get(gt.GRAD_PREFIX + name), rows, logits, classifier)
            if needs.masks:
                ev.probe = GraphProbe(self, x, rows, name, {t: out[t] for t in self.tail_inputs(name)}
                                      if needs.masks != "inputs" else None)
            if needs.layers == "conv":
                pre, ev.bias = self._conv_blocks[name]
                ev.pre_grads = out[gt.GRAD_PREFIX + pre]
            elif needs.layers == "bias":
                ev.bias = self._bias_terms[name]
            evidence.append(ev)
        probe = GraphProbe(self, x, rows) if needs.masks else None
        return RunEvidence(x, logits, rows, evidence, out.get(gt.GRAD_PREFIX + self.info.input_name), probe)

    # -- validation ---------------------------------------------------------------------------
    def _method(self, name: str) -> Method:
        if name not in METHODS:
            raise BadRequest(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}", "method")
        return METHODS[name]

    def _target_layers(self, spec: Method, layers: list[str] | None) -> list[str]:
        if spec.needs.layers == "none":
            return []
        if spec.needs.layers == "bias":
            return list(self._bias_terms)
        if spec.needs.layers == "conv":
            if not layers:
                return list(self._conv_blocks)
            layers = list(dict.fromkeys(layers))
            unknown = [name for name in layers if name not in self._conv_blocks]
            if unknown:
                raise BadRequest(f"layer {unknown[0]!r} is not a conv block output; integrative uses conv "
                                 f"outputs such as {list(self._conv_blocks)[-3:]}", "layers")
            return list(layers)
        layers = list(dict.fromkeys(layers)) if layers else [self.info.default_layer]
        try:
            self.info.check_layers(layers)
        except gt.GraphError as error:
            raise BadRequest(str(error), "layers") from error
        if spec.needs.classifier:
            if len(layers) != 1:
                raise BadRequest(f"{spec.name!r} explains one layer, the one feeding the classifier; "
                                 f"got {len(layers)}", "layers")
            try:
                self._classifier(layers[0])
            except gt.GraphError as error:
                raise BadRequest(str(error), "layers") from error
        return layers

    def check_input(self, x) -> np.ndarray:
        """x as a float32 (N, C, H, W) batch this model takes, or BadRequest."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            if not np.issubdtype(x.dtype, np.floating):
                raise BadRequest(f"input must be float32, got {x.dtype}", "input")
            x = x.astype(np.float32)
        if x.ndim != 4:
            raise BadRequest(f"input must be (N, C, H, W), got shape {x.shape}", "input")
        channels, spatial = self.info.channels, self.info.spatial
        if isinstance(channels, int) and x.shape[1] != channels:
            raise BadRequest(f"input has {x.shape[1]} channels; the model takes {channels}", "input")
        for axis, want in zip((2, 3), spatial):
            if isinstance(want, int) and x.shape[axis] != want:
                raise BadRequest(f"input is {x.shape[2]}x{x.shape[3]}; the model takes "
                                 f"{spatial[0]}x{spatial[1]}", "input")
        if len(x) == 0 or min(x.shape[2:]) < 2:
            raise BadRequest(f"input shape {x.shape} is empty", "input")
        if not np.isfinite(x).all():
            raise BadRequest("input holds NaN or Inf values", "input")
        return x

    def class_rows(self, targets, n: int) -> np.ndarray:
        """(N, classes) class-weight rows; an all-zero row means "this image's top-1 class"."""
        classes = self.info.num_classes
        if classes is None:
            raise BadRequest("the model's number of classes is unknown (symbolic logits axis)", "model")
        rows = np.zeros((n, classes), np.float32)
        if targets is None:
            return rows
        array = np.asarray(targets)
        if array.ndim == 2:
            if array.shape != (n, classes):
                raise BadRequest(f"class weights must be ({n}, {classes}), got {array.shape}", "targets")
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise BadRequest(f"class weights must be real numbers, got {array.dtype}", "targets")
            if not np.isfinite(array.astype(np.float64)).all():
                raise BadRequest("class weights hold NaN or Inf", "targets")
            return array.astype(np.float32)
        ids = np.broadcast_to(array, (n,)) if array.ndim == 0 else array
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise BadRequest(f"targets must be one class id per image ({n}) or ({n}, {classes}) weights", "targets")
        bad = ids[(ids < 0) | (ids >= classes)]
        if bad.size:
            raise BadRequest(f"class id {int(bad[0])} out of range [0, {classes})", "targets")
        rows[np.arange(n), ids] = 1.0
        return rows


@lru_cache(maxsize=1)
def _one_blas_thread() -> None:
    """Hold numpy's BLAS to one thread, process-wide, once: its threads busy-wait after each call and
    contend with ONNX Runtime's (FD-CAM's similarity matrix between two runs: 117 -> 76 ms on 2 cores).
    Set once rather than per call, where concurrent requests would restore each other's limits."""
    ThreadpoolController().limit(limits=1, user_api="blas")


def _layer_map(spec: Method, evidence, options: dict) -> np.ndarray:
    try:
        return spec.layer_map(evidence, options)
    except gt.GraphError as error:  # a mask graph the method asked for cannot be built at this layer
        raise BadRequest(str(error), "layers") from error
    except ValueError as error:
        raise BadRequest(str(error), "options") from error


def _resolve_top1(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    empty = ~rows.any(axis=1)
    rows[empty, logits[empty].argmax(axis=1)] = 1.0
    return rows
