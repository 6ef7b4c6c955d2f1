"""The method registry: each method is a small numpy function over the evidence of the typed run it declares."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import OptionError
from ..numeric import count, minmax, softmax
from ..runs import Run


@dataclass(frozen=True)
class Method:
    """A registered method: its function, the run kind whose evidence it reads, its options and defaults.

    fn takes one layer's evidence (or, where the run is not per layer, the whole network's) and the
    options it names, and returns the raw (N, h, w) map (or the final (N, H, W) maps).
    """
    name: str
    fn: Callable[..., np.ndarray]
    run: Run
    options: dict[str, Any] = field(default_factory=dict)   # the method's and its run kind's, with defaults
    relu: bool = True             # ReLU before the per-layer min-max (pytorch-grad-cam >= 1.3.3)
    fusion: str = "mean"
    cost: str = "1 forward + 1 backward"
    doc: str = ""
    unbatched: bool = False       # draws random numbers for the whole batch at once: a neighbour changes its maps
    cost_override: str | None = None
    kinds_override: tuple[str, ...] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The model kinds whose targets the method explains: its run kind's, unless it says fewer."""
        return self.kinds_override or self.run.kinds

    @property
    def per_layer(self) -> bool:
        """False: fn returns the final (N, H, W) maps itself."""
        return self.run.per_layer

    @property
    def gradients(self) -> bool:
        return self.run.gradients

    @property
    def batchable(self) -> bool:
        """Whether images may share a run with other requests' images and get the same maps as alone."""
        return self.run.batchable and not self.unbatched

    @property
    def cost_class(self) -> str:
        """"forward" (about one forward), "few_forwards", or "per_channel" (a forward per channel or mask)."""
        return self.cost_override or self.run.cost_class

    def layer_map(self, evidence, options: dict[str, Any]) -> np.ndarray:
        """The raw (N, h, w) map of one layer, passing the function only the options it declares."""
        accepted = _parameters(self.fn)
        return self.fn(evidence, **{k: v for k, v in options.items() if k in accepted}).astype(np.float32, copy=False)

    def bind(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
            raise OptionError(f"method {self.name!r} has no option {unknown[0]!r}; its options: {valid}")
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
        raise OptionError(f"option {key!r} of {method!r} takes {kind}, got {value!r}")
    return value


METHODS: dict[str, Method] = {}


@functools.lru_cache(maxsize=None)
def _parameters(fn: Callable) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def method(name: str, run: Run, options: dict[str, Any] | None = None, cost_class: str | None = None,
           kinds: tuple[str, ...] | None = None, **spec) -> Callable:
    """Register fn as method `name`, reading the evidence of `run`; its options are the run kind's and its own."""
    def register(fn: Callable) -> Callable:
        METHODS[name] = Method(name, fn, run, {**run.options, **(options or {})}, cost_override=cost_class,
                               kinds_override=kinds,
                               doc=(fn.__doc__ or "").strip().splitlines()[0], **spec)
        return fn
    return register


def class_score(logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rows . logits for (N, [M,] classes) logits: the target logit, or a class mix; for any other kind, the
    target functional sum(W * output) of (N, [M,] *output) outputs with W (N, *output)."""
    if rows.ndim == 2:
        return np.einsum("n...c,nc->n...", logits, rows)
    extra = logits.ndim - rows.ndim   # 1 with a masks axis
    weights = rows.reshape(rows.shape[:1] + (1,) * extra + rows.shape[1:])
    return (logits * weights).reshape(*logits.shape[:1 + extra], -1).sum(-1)


def class_probability(logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rows . softmax(logits) over classes: the target's probability, or a class mix of them."""
    return class_score(softmax(logits.astype(np.float64), -1), rows.astype(np.float64)).astype(np.float32)


def minmax_channels(acts: np.ndarray, eps: float, axes: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """numeric.minmax per channel of (N, K, h, w) by default."""
    return minmax(acts, eps, axes)


count_option = count   # an option that must be an integer >= 1


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
