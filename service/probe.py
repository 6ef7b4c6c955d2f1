"""Perturbation runs for one request over the mask-injection graphs, chunked so memory stays bounded."""
from __future__ import annotations

from typing import Callable

import numpy as np

import graph_tools as gt
from graph_tools import masks as gm

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
        self.runs = 0    # batched runs made, for tests and benchmarks

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
            self.runs += 1
        return np.concatenate(parts, axis=1)

    def channels(self, masks: np.ndarray, fill=0.0, logits: bool = False) -> np.ndarray:
        masks = np.asarray(masks, np.float32)
        fill = np.asarray(fill, np.float32).reshape((-1, 1, 1) if np.ndim(fill) <= 1 else np.shape(fill))
        filled = bool(fill.any())
        key = ("channel", self.layer, logits, filled)
        build = lambda: self.explainer.tail_graph("channel", self.layer, logits, filled)  # noqa: E731

        def feeds(a: int, b: int) -> dict:
            extra = {gm.FILL: fill[:, a:b] if fill.shape[1] > 1 else fill} if filled else {}
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
        unit = np.ones((1, 1, 1, 1), np.float32)
        scale = unit if scale is None else np.asarray(scale, np.float32)
        explainer = self.explainer
        blend = baseline is not None
        key = ("inputs", normalise, logits, blend)
        build = lambda: explainer.input_graph(normalise, logits, blend)  # noqa: E731
        image = explainer.feed(self.x)
        extra = {}
        if blend:
            baseline = np.asarray(baseline, np.float32)
            full = baseline.ndim == 4 and baseline.shape[1:] == self.x.shape[1:]
            extra[gm.BASELINE] = explainer.feed(baseline) if full else baseline

        def feeds(a: int, b: int) -> dict:
            if callable(noise):
                shift = np.asarray(noise(a, b), np.float32)
            else:
                shift = 0 * unit if noise is None else np.asarray(noise, np.float32)[:, a:b]
            return {explainer.info.input_name: image, gm.MAPS: maps[:, a:b],
                    gm.ROWS: rows[a:b] if rows.ndim == 3 else rows, gm.COLS: cols[a:b] if cols.ndim == 3 else cols,
                    gm.EPS: np.array(eps, np.float32), gm.SCALE: scale[:, a:b] if scale.shape[1] > 1 else scale,
                    gm.NOISE: shift, **extra}
        return self._collect(key, build, maps.shape[1], self._chunk(int(np.prod(self.x.shape[1:]))), feeds, logits)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.explainer.predict(x)
