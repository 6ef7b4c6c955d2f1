"""The method registry: each method is a small weight function that declares the graph run it needs."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


@dataclass(frozen=True)
class Needs:
    """What one run of the rewritten graph must return for a method.

    gradients: d score / d activation at the layers. layers: which tensors are the layers
    ("target": the caller's; "bias": every biased Conv/BN output, FullGrad; "conv": every conv
    block, Integrative CAM). input_gradient: d score / d input. classifier: the GAP+FC weights (CAM).
    noisy_copies: the batch is expanded with noisy copies of the input (Smooth Grad-CAM++).
    masks: the method perturbs through `Evidence.probe` ("channel" or "mosaic": the network after
    the layer; "inputs": the whole network on masked images); layers "none": no layer at all (RISE).
    """
    gradients: bool = False
    layers: str = "target"
    input_gradient: bool = False
    classifier: bool = False
    noisy_copies: bool = False
    masks: str = ""


class Probe(Protocol):
    """Batched perturbation runs for one request, chunked so memory stays bounded.

    Scores are class_weights . logits per perturbed copy, (N, M); with logits=True the
    (N, M, classes) logits instead. M is the masks axis of the arguments.
    """
    x: np.ndarray              # (N, C, H, W) the images, NCHW
    rows: np.ndarray           # (N, classes) class weights, top-1 resolved

    def channels(self, masks: np.ndarray, fill=0.0, logits: bool = False) -> np.ndarray:
        """The network after the layer on A*m + fill*(1-m); masks (N|1, M, K), fill a scalar, (N,) per
        image, or (N|1, M|1, K|1)."""

    def mosaic(self, positions: np.ndarray, spread: np.ndarray, logits: bool = True) -> np.ndarray:
        """The network after the layer on copies holding A[:, positions[m]] * spread[m, p] at each position p."""

    def inputs(self, maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, normalise: bool = False,
               eps: float = 0.0, scale=None, noise=None, baseline=None, logits: bool = False) -> np.ndarray:
        """The network on x*m + baseline*(1-m), m = normalised(rows @ maps @ cols) * scale + noise.

        maps (N|1, M, h, w); rows (H, h) or (M, H, h); cols (w, W) or (M, w, W); scale (N|1, M|1, 1, 1);
        noise: an array broadcastable to (N|1, M, H, W) or a function (start, stop) -> the noise of
        masks start..stop; baseline broadcastable to x.
        """

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a batch of images."""


@dataclass
class Evidence:
    """What a run produced for one layer, in numpy; fields a method did not ask for stay None."""
    name: str
    acts: np.ndarray | None                   # (N, K, h, w); (S+1, N, K, h, w) with noisy copies; None for FullGrad
    grads: np.ndarray | None = None
    class_weights: np.ndarray | None = None   # (N, classes), rows resolved (top-1 filled in)
    logits: np.ndarray | None = None
    classifier: np.ndarray | None = None      # (classes, K)
    pre_grads: np.ndarray | None = None       # gradient at the pre-activation conv output
    bias: np.ndarray | None = None            # (K,) bias of the layer's conv
    probe: Probe | None = None                # perturbation runs at this layer (methods with `masks`)
    extras: dict[str, np.ndarray] = field(default_factory=dict)   # by-products a method returns (class maps)


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., np.ndarray]
    needs: Needs
    options: dict[str, Any] = field(default_factory=dict)
    per_layer: bool = True        # False: fn returns the final (N, H, W) maps itself
    relu: bool = True             # ReLU before the per-layer min-max (pytorch-grad-cam >= 1.3.3)
    fusion: str = "mean"
    cost: str = "1 forward + 1 backward"
    doc: str = ""
    unbatched: bool = False       # draws random numbers for the whole batch at once: a neighbour changes its maps

    @property
    def gradients(self) -> bool:
        return self.needs.gradients

    @property
    def batchable(self) -> bool:
        """Whether images may share a run with other requests' images and get the same maps as alone."""
        return not (self.unbatched or self.needs.noisy_copies)

    @property
    def cost_class(self) -> str:
        """"forward" (about one forward), "few_forwards", or "per_channel" (a forward per channel or mask)."""
        needs = self.needs
        if needs.masks == "inputs" and self.name != "groupcam":
            return "per_channel"
        if needs.masks or needs.noisy_copies or needs.layers in ("bias", "conv"):
            return "few_forwards"
        return "forward"

    def layer_map(self, evidence: "Evidence", options: dict[str, Any]) -> np.ndarray:
        """The raw (N, h, w) map of one layer, passing the function only the options it declares."""
        accepted = _parameters(self.fn)
        return self.fn(evidence, **{k: v for k, v in options.items() if k in accepted}).astype(np.float32, copy=False)

    def bind(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
            raise KeyError(f"method {self.name!r} has no option {unknown[0]!r}; its options: {valid}")
        return {**self.options, **{key: _checked(self.name, key, self.options[key], value)
                                   for key, value in options.items()}}


def _checked(method: str, key: str, default, value):
    """An option's value of its default's kind (a None default takes anything): over gRPC a text "false"
    must not turn a flag on, nor a flag pass for a number."""
    if default is None:
        return value
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if isinstance(default, bool):
        ok, kind = isinstance(value, (bool, np.bool_)), "a flag (true/false)"
    elif isinstance(default, int):
        ok, kind = number and isinstance(value, (int, np.integer)), "an integer"
    elif isinstance(default, float):
        ok, kind = number and bool(np.isfinite(value)), "a finite number"
        value = float(value) if ok else value
    else:
        ok, kind = isinstance(value, str), "text"
    if not ok:
        raise TypeError(f"option {key!r} of {method!r} takes {kind}, got {value!r}")
    return value


METHODS: dict[str, Method] = {}


@functools.lru_cache(maxsize=None)
def _parameters(fn: Callable) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def method(name: str, needs: Needs, **spec) -> Callable:
    def register(fn: Callable) -> Callable:
        METHODS[name] = Method(name, fn, needs, doc=(fn.__doc__ or "").strip().splitlines()[0], **spec)
        return fn
    return register


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def class_score(logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rows . logits for (N, [M,] classes) logits: the target logit, or a class mix."""
    return np.einsum("n...c,nc->n...", logits, rows)


def class_probability(logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rows . softmax(logits) over classes: the target's probability, or a class mix of them."""
    return class_score(softmax(logits.astype(np.float64), -1), rows.astype(np.float64)).astype(np.float32)


def minmax_channels(acts: np.ndarray, eps: float, axes: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """(A - min) / (max(A - min) + eps) over `axes` (per channel of (N, K, h, w) by default); a
    constant slice becomes 0."""
    shifted = acts - acts.min(axis=axes, keepdims=True)
    top = shifted.max(axis=axes, keepdims=True) + eps
    return np.divide(shifted, top, out=np.zeros_like(shifted), where=top > 0)


def count_option(value, name: str) -> int:
    """An option that must be an integer >= 1, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def weighted_sum(acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k w_k A_k for (N, K) weights over (N, K, h, w) activations."""
    return np.einsum("nk,nkhw->nhw", weights.astype(np.float32, copy=False), acts.astype(np.float32, copy=False))


def first_component(batch: np.ndarray) -> np.ndarray:
    """Projection on the first principal component of centred (h*w, K) activations, per image.

    No sign fix, as in pytorch-grad-cam's get_2d_projection.
    """
    batch = np.nan_to_num(batch)
    out = []
    for acts in batch:
        x = acts.reshape(acts.shape[0], -1).T
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        out.append((x @ vt[0]).reshape(acts.shape[1:]))
    return np.float32(out)
