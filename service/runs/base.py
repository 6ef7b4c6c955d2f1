"""What every run kind shares: the context it runs in, the evidence types it hands a method, and the result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from camserve import graph_tools as gt

from ..errors import BadRequest
from ..model import Model
from ..runtime import Runtime


@dataclass
class Context:
    """What a run gets: the model, the runtime owning its sessions, and the perturbation budget (at most
    `budget` images' worth of perturbed tensors per run). Never the Explainer: runs only look down."""
    model: Model
    runtime: Runtime
    budget: int = 32

    @property
    def info(self) -> gt.ModelInfo:
        return self.model.info

    def forward(self, tensors: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
        """The logits and `tensors` of one plain run (an empty list: logits only)."""
        key = ("forward", tuple(tensors))
        build = lambda: gt.expose(self.model.graph, [self.info.logits, *tensors])  # noqa: E731
        return channels_first(self.info, self.runtime.run(key, build, {self.info.input_name: self.model.feed(x)}))

    def warm(self) -> None:
        """Build the plain session now, so that the runtime's providers tell the truth from the start."""
        self.runtime.session(("forward", ()), lambda: gt.expose(self.model.graph, [self.info.logits]))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward([], x)[self.info.logits]

    def gradients(self, layers: list[str], x: np.ndarray, rows: np.ndarray, input_gradient: bool = False,
                  shown: list[str] | None = None) -> dict[str, np.ndarray]:
        """One run of the gradient graph seeded by `rows`: logits, d(rows . logits)/d layer for every layer,
        the activations of `shown` (default: the layers) and, with input_gradient, d/d input (NCHW). rows with a
        targets axis (N, T, *output) give gradients (N, T, ...), one per target."""
        size, base = self.differentiable(x)
        shown = tuple(layers if shown is None else shown)
        seeds = rows.ndim == len(self.info.output_shape) + 1
        key = ("gradients", tuple(layers), input_gradient, shown, seeds, *size)
        build = lambda: gt.add_gradients(base(), layers, input_gradient, list(shown), self.info, seeds,  # noqa: E731
                                         self.model.ste)
        out = self.runtime.run(key, build, {self.info.input_name: self.model.feed(x), gt.CLASS_WEIGHTS: rows})
        out[self.info.logits] = out[gt.LOGITS]
        channels_first(self.info, out)
        grad_x = out.get(gt.GRAD_PREFIX + self.info.input_name)
        if grad_x is not None and self.info.layout == "NHWC":
            out[gt.GRAD_PREFIX + self.info.input_name] = grad_x.transpose(0, 3, 1, 2)
        return out

    def plusplus_maps(self, blocks: list[tuple[str, str, np.ndarray]], x: np.ndarray, rows: np.ndarray,
                      ratio: np.ndarray) -> dict[str, np.ndarray]:
        """One run of the gradient graph with every block (z, A, b) reduced in it: logits, and per A its
        (N, h, w) map, share and mass sum |g A| (graph_tools.add_plusplus_maps); `ratio` (N,) is Grad-CAM++'s r."""
        size, base = self.differentiable(x)
        names = tuple(a for _, a, _ in blocks)
        layers = list(dict.fromkeys([a for _, a, _ in blocks] + [z for z, _, _ in blocks]))
        last = {layer.name for layer in self.info.channels_last}

        def build() -> onnx.ModelProto:
            graph = gt.add_gradients(base(), layers, activations=[], info=self.info, ste=self.model.ste)
            return gt.add_plusplus_maps(graph, blocks, last & set(layers))

        feeds = {self.info.input_name: self.model.feed(x), gt.CLASS_WEIGHTS: rows, gt.RATIO: ratio}
        out = self.runtime.run(("plusplus", names, *size), build, feeds)
        out[self.info.logits] = out[gt.LOGITS]
        return out

    def differentiable(self, x: np.ndarray) -> tuple[tuple, Callable[[], onnx.ModelProto]]:
        """The graph to differentiate for this input, and its cache-key part: models with symbolic H
        and W get a static-size copy per input size (transposed convolutions need static sizes)."""
        if all(isinstance(d, int) for d in self.info.spatial):
            return (), lambda: self.model.graph
        size = tuple(x.shape[2:])
        return (size,), lambda: gt.fix_spatial_size(self.model.graph, *size, self.info)


def channels_first(info: gt.ModelInfo, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """out (changed in place) with every channels-last layer's tensors, its activations and gradients (with a
    targets axis or not), turned (N, C, h, w): methods read channels on axis 1 of the last four."""
    for layer in info.channels_last:
        for name in (layer.name, gt.GRAD_PREFIX + layer.name, gt.HVP_PREFIX + layer.name):
            value = out.get(name)
            if value is not None:
                out[name] = np.moveaxis(value, -1, -3)
    return out


ALL_KINDS = ("classifier", "segmenter", "detector", "embedding")


# -- evidence: what a run hands a method, one type per run kind ---------------------------------------
@dataclass(kw_only=True)
class Activations:
    """One layer after a plain forward."""
    name: str
    acts: np.ndarray                # (N, K, h, w)
    class_weights: np.ndarray       # (N, classes), top-1 filled in
    logits: np.ndarray              # (N, classes)
    extras: dict[str, np.ndarray] = field(default_factory=dict)   # by-products a method returns (class maps)


@dataclass(kw_only=True)
class Classified(Activations):
    classifier: np.ndarray          # (classes, K): the GAP + FC weights after the layer


@dataclass(kw_only=True)
class WithGradients(Activations):
    grads: np.ndarray               # d score / d acts, like acts

    def fusion_evidence(self) -> tuple[np.ndarray, np.ndarray]:
        """The (acts, grads) adaptive fusion weighs this layer by."""
        return self.acts, self.grads


@dataclass(kw_only=True)
class WithHessian(WithGradients):
    hvp: np.ndarray                 # (d2 score / d acts2) . acts, like acts


@dataclass(kw_only=True)
class ConvBlockMap:
    """One conv block reduced inside the gradient graph (graph_tools.reductions): no tensor of it leaves the run."""
    name: str
    map: np.ndarray                 # (N, h, w) sum_k alpha ReLU(g) A + sum_k b_k dS/dz_k
    share: np.ndarray               # (N,) sum ReLU(g A) / sum |g A|: adaptive fusion's score of the layer
    mass: np.ndarray                # (N,) sum |g A|: zero where the target reaches no activation of the layer
    class_weights: np.ndarray
    logits: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(kw_only=True)
class NoisyGradients(WithGradients):
    """acts and grads with a leading copies axis (S+1, N, K, h, w): the clean batch first."""

    def fusion_evidence(self) -> tuple[np.ndarray, np.ndarray]:
        return self.acts[0], self.grads[0]


@dataclass(kw_only=True)
class Probed(Activations):
    probe: Any                      # a runs.probe.Probe at this layer


@dataclass(kw_only=True)
class ProbedGradients(WithGradients):
    probe: Any


@dataclass(kw_only=True)
class BiasGradient:
    name: str
    grads: np.ndarray               # d score / d the biased output
    bias: np.ndarray                # (K,)


@dataclass(kw_only=True)
class WholeNetwork:
    """Evidence of a whole-model method (per_layer=False): the input, its gradient, bias gradients, a probe."""
    x: np.ndarray
    logits: np.ndarray
    class_weights: np.ndarray
    input_grad: np.ndarray | None = None
    layers: list[BiasGradient] = field(default_factory=list)
    probe: Any = None


@dataclass
class Result:
    """A run's output: the logits, the class rows with every top-1 resolved, the evidence."""
    logits: np.ndarray
    rows: np.ndarray
    evidence: list[Activations] | WholeNetwork


class Run:
    """A run kind: how to get a method's evidence out of the model.

    Subclasses say which layers they explain (`layers`), what they return (`__call__`), whether images
    of different requests may share a run (`batchable`), their cost class, whether their evidence has
    gradients (adaptive fusion), whether they hand one evidence per layer, and the options they read.
    """
    batchable = True
    cost_class = "forward"
    gradients = False
    per_layer = True
    target_layers = True   # explains the caller's target layers (default: the model's default layer)
    options: dict[str, Any] = {}
    kinds: tuple[str, ...] = ("classifier",)   # model kinds whose targets it scores (perturbation scores: classes)
    seeds = False          # takes T targets per image in one run (weights (N, T, *output))
    targeted = True        # its evidence depends on the target (a forward's activations do not)

    def layers(self, model: Model, requested: list[str] | None) -> list[str]:
        return model.target_layers(requested)

    def __call__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layers: list[str], options: dict) -> Result:
        raise NotImplementedError


def top1(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Rows with every all-zero row (this image's top-1) made the one-hot of its argmax."""
    if rows.ndim != 2 or logits.ndim != 2:   # only a classifier's rows leave the top-1 to the run
        return rows
    rows = rows.copy()
    empty = ~rows.any(axis=1)
    rows[empty, logits[empty].argmax(axis=1)] = 1.0
    return rows


def probed(name: str, out: dict[str, np.ndarray], rows: np.ndarray, logits: np.ndarray, probe,
           gradients: bool) -> Probed | ProbedGradients:
    """A perturbation run kind's evidence at one layer: its activations (and gradients) from `out`, its probe."""
    common = dict(name=name, acts=out[name], class_weights=rows, logits=logits, probe=probe)
    return ProbedGradients(grads=out[gt.GRAD_PREFIX + name], **common) if gradients else Probed(**common)


def single_layer(name: str, layers: list[str]) -> list[str]:
    if len(layers) != 1:
        raise BadRequest(f"{name} explains one layer, the one feeding the classifier; got {len(layers)}", "layers")
    return layers
