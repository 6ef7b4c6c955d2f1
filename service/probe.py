"""Perturbation runs for one request over the mask-injection graphs, chunked so memory stays bounded."""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from camserve import graph_tools as gt
from camserve.graph_tools import masks as gm

from .runtime import Runtime


class GraphProbe:
    """The `Probe` a perturbation method gets: one per request (images x, class rows, one layer).

    Every call splits its M masks into chunks so that one run holds at most `budget` elements of
    perturbed tensors (images x masks x the size of what is perturbed); a chunk is one batched run.
    """

    def __init__(self, explainer, x: np.ndarray, rows: np.ndarray, layer: str | None = None,
                 fed: dict[str, np.ndarray] | None = None):
        self.explainer, self.x, self.rows = explainer, x, rows
        self.layer, self.fed = layer, fed or {}

    @property
    def _runtime(self) -> Runtime:
        return self.explainer.runtime

    def _chunk(self, per_copy: int) -> int:
        budget = self.explainer.max_batch * int(np.prod(self.x.shape[1:]))
        return max(1, budget // max(1, len(self.x) * per_copy))

    def _tail_copy_size(self) -> int:
        acts = self.fed[self.layer]
        pooled = self.explainer.pooled(self.layer)
        return acts.shape[1] if pooled else int(np.prod(acts.shape[1:]))

    def _collect(self, key: tuple, build: Callable, total: int, chunk: int, feeds: Callable[[int, int], dict],
                 logits: bool) -> np.ndarray:
        want = gm.LOGITS if logits else gm.SCORES
        parts = []
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            parts.append(self._runtime.run(key, build, {**feeds(start, stop), gt.CLASS_WEIGHTS: self.rows})[want])
        return np.concatenate(parts, axis=1)

    def channels(self, masks: np.ndarray, fill=0.0, logits: bool = False) -> np.ndarray:
        masks = np.asarray(masks, np.float32)
        fill = np.asarray(fill, np.float32).reshape((-1, 1, 1) if np.ndim(fill) <= 1 else np.shape(fill))
        filled = bool(fill.any())
        key = ("channel", self.layer, logits, filled)
        build = lambda: self.explainer.tail_graph("channel", self.layer, logits, filled)  # noqa: E731

        def feeds(a: int, b: int) -> dict:
            extra = {gm.FILL: _per_mask(fill, a, b)} if filled else {}
            return {**self.fed, gm.MASKS: masks[:, a:b], **extra}
        return self._collect(key, build, masks.shape[1], self._chunk(self._tail_copy_size()), feeds, logits)

    def mosaic(self, positions: np.ndarray, spread: np.ndarray, logits: bool = True) -> np.ndarray:
        positions, spread = np.asarray(positions, np.int64), np.asarray(spread, np.float32)
        key = ("mosaic", self.layer, logits)
        build = lambda: self.explainer.tail_graph("mosaic", self.layer, logits, False)  # noqa: E731

        def feeds(a: int, b: int) -> dict:
            return {**self.fed, gm.POSITIONS: positions[a:b], gm.SPREAD: spread[a:b]}
        return self._collect(key, build, len(positions), self._chunk(self._tail_copy_size()), feeds, logits)

    def inputs(self, maps, rows, cols, normalise: bool = False, eps: float = 0.0, scale=None, noise=None,
               baseline=None, logits: bool = False) -> np.ndarray:
        maps, rows, cols = (np.asarray(a, np.float32) for a in (maps, rows, cols))
        scale = _rank4(1.0 if scale is None else scale)
        fixed_noise = None if callable(noise) else _rank4(0.0 if noise is None else noise)
        explainer = self.explainer
        blend = baseline is not None
        key = ("inputs", normalise, logits, blend)
        build = lambda: explainer.input_graph(normalise, logits, blend)  # noqa: E731
        # the baseline in full and in the model's layout: a (1, C, 1, 1) one would meet an NHWC graph unturned
        extra = {gm.BASELINE: explainer.feed(np.broadcast_to(_rank4(baseline), self.x.shape))} if blend else {}

        def feeds(a: int, b: int) -> dict:
            shift = np.asarray(noise(a, b), np.float32) if callable(noise) else _per_mask(fixed_noise, a, b)
            return {explainer.info.input_name: self._image, gm.MAPS: maps[:, a:b],
                    gm.ROWS: rows[a:b] if rows.ndim == 3 else rows, gm.COLS: cols[a:b] if cols.ndim == 3 else cols,
                    gm.EPS: np.array(eps, np.float32), gm.SCALE: _per_mask(scale, a, b), gm.NOISE: shift, **extra}
        return self._collect(key, build, maps.shape[1], self._chunk(int(np.prod(self.x.shape[1:]))), feeds, logits)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.explainer.predict(x)

    @cached_property
    def _image(self) -> np.ndarray:
        return self.explainer.feed(self.x)


def _rank4(value) -> np.ndarray:
    """A scalar or an array with trailing axes broadcastable to (N, M, H, W), as float32 of rank 4."""
    value = np.asarray(value, np.float32)
    if value.ndim > 4:
        raise ValueError(f"expected at most 4 axes, got shape {value.shape}")
    return value.reshape((1,) * (4 - value.ndim) + value.shape)


def _per_mask(value: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The masks start..stop of an (N|1, M|1, ...) array: axis 1 is sliced only where it is not broadcast."""
    return value[:, start:stop] if value.shape[1] > 1 else value
