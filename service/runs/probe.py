"""Perturbation runs for one request over the mask-injection graphs, chunked so that memory stays bounded."""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from camserve import graph_tools as gt
from camserve.graph_tools import masks as gm

from .base import Context


class Probe:
    """Batched perturbation runs for one request (images x, class rows, one layer), what a perturbation
    method gets as `ev.probe`.

    Scores are class_weights . logits per perturbed copy, (N, M); with logits=True the (N, M, classes)
    logits instead. M is the masks axis of the arguments. Every call splits its M masks into chunks so
    that one run holds at most `ctx.budget` images' worth of perturbed tensors (images x masks x the
    size of what is perturbed); a chunk is one batched run.
    """

    def __init__(self, ctx: Context, x: np.ndarray, rows: np.ndarray, layer: str | None = None,
                 fed: dict[str, np.ndarray] | None = None):
        self.ctx, self.x, self.rows = ctx, x, rows      # x: (N, C, H, W) NCHW; rows: (N, classes), top-1 resolved
        self.layer, self.fed = layer, fed or {}
        # a tail reads its side inputs as the graph made them: channels-last ones go back (N, h, w, C)
        last = ctx.info.is_channels_last
        self._graph_fed = {name: np.ascontiguousarray(np.moveaxis(value, -3, -1)) if last(name) else value
                           for name, value in self.fed.items()}

    def _chunk(self, per_copy: int) -> int:
        budget = self.ctx.budget * int(np.prod(self.x.shape[1:]))
        return max(1, budget // max(1, len(self.x) * per_copy))

    def _tail_copy_size(self) -> int:
        acts = self.fed[self.layer]
        return acts.shape[1] if self.ctx.model.pooled(self.layer) else int(np.prod(acts.shape[1:]))

    def _collect(self, key: tuple, build: Callable, total: int, chunk: int, feeds: Callable[[int, int], dict],
                 logits: bool) -> np.ndarray:
        want = gm.LOGITS if logits else gm.SCORES
        parts = []
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            parts.append(self.ctx.runtime.run(key, build, {**feeds(start, stop), gt.CLASS_WEIGHTS: self.rows})[want])
        return np.concatenate(parts, axis=1)

    def channels(self, masks: np.ndarray, fill=0.0, logits: bool = False) -> np.ndarray:
        """The network after the layer on A*m + fill*(1-m); masks (N|1, M, K), fill a scalar, (N,) per
        image, or (N|1, M|1, K|1)."""
        masks = np.asarray(masks, np.float32)
        fill = np.asarray(fill, np.float32).reshape((-1, 1, 1) if np.ndim(fill) <= 1 else np.shape(fill))
        filled = bool(fill.any())
        model = self.ctx.model
        key = ("channel", self.layer, logits, filled)
        build = lambda: gm.channel_tail(model.graph, self.layer, logits, model.info, filled)  # noqa: E731

        def feeds(a: int, b: int) -> dict:
            extra = {gm.FILL: _per_mask(fill, a, b)} if filled else {}
            return {**self._graph_fed, gm.MASKS: masks[:, a:b], **extra}
        return self._collect(key, build, masks.shape[1], self._chunk(self._tail_copy_size()), feeds, logits)

    def mosaic(self, positions: np.ndarray, spread: np.ndarray, logits: bool = True) -> np.ndarray:
        """The network after the layer on copies holding A[:, positions[m]] * spread[m, p] at each position p."""
        positions, spread = np.asarray(positions, np.int64), np.asarray(spread, np.float32)
        model = self.ctx.model
        key = ("mosaic", self.layer, logits)
        build = lambda: gm.mosaic_tail(model.graph, self.layer, logits, model.info)  # noqa: E731

        def feeds(a: int, b: int) -> dict:
            return {**self._graph_fed, gm.POSITIONS: positions[a:b], gm.SPREAD: spread[a:b]}
        return self._collect(key, build, len(positions), self._chunk(self._tail_copy_size()), feeds, logits)

    def inputs(self, maps, rows, cols, normalise: bool = False, eps: float = 0.0, scale=None, noise=None,
               baseline=None, logits: bool = False) -> np.ndarray:
        """The network on x*m + baseline*(1-m), m = normalised(rows @ maps @ cols) * scale + noise.

        maps (N|1, M, h, w); rows (H, h) or (M, H, h); cols (w, W) or (M, w, W); scale (N|1, M|1, 1, 1);
        noise: an array broadcastable to (N|1, M, H, W) or a function (start, stop) -> the noise of
        masks start..stop; baseline broadcastable to x.
        """
        maps, rows, cols = (np.asarray(a, np.float32) for a in (maps, rows, cols))
        scale = _rank4(1.0 if scale is None else scale)
        fixed_noise = None if callable(noise) else _rank4(0.0 if noise is None else noise)
        model = self.ctx.model
        blend = baseline is not None
        key = ("inputs", normalise, logits, blend)
        build = lambda: gm.masked_inputs(model.graph, normalise, logits, blend, model.info)  # noqa: E731
        # the baseline in full and in the model's layout: a (1, C, 1, 1) one would meet an NHWC graph unturned
        extra = {gm.BASELINE: model.feed(np.broadcast_to(_rank4(baseline), self.x.shape))} if blend else {}

        def feeds(a: int, b: int) -> dict:
            shift = np.asarray(noise(a, b), np.float32) if callable(noise) else _per_mask(fixed_noise, a, b)
            return {model.info.input_name: self._image, gm.MAPS: maps[:, a:b],
                    gm.ROWS: rows[a:b] if rows.ndim == 3 else rows, gm.COLS: cols[a:b] if cols.ndim == 3 else cols,
                    gm.EPS: np.array(eps, np.float32), gm.SCALE: _per_mask(scale, a, b), gm.NOISE: shift, **extra}
        return self._collect(key, build, maps.shape[1], self._chunk(int(np.prod(self.x.shape[1:]))), feeds, logits)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a batch of images."""
        return self.ctx.logits(self.ctx.model.check_input(x))

    @cached_property
    def _image(self) -> np.ndarray:
        return self.ctx.model.feed(self.x)


def _rank4(value) -> np.ndarray:
    """A scalar or an array with trailing axes broadcastable to (N, M, H, W), as float32 of rank 4."""
    value = np.asarray(value, np.float32)
    if value.ndim > 4:
        raise ValueError(f"expected at most 4 axes, got shape {value.shape}")
    return value.reshape((1,) * (4 - value.ndim) + value.shape)


def _per_mask(value: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The masks start..stop of an (N|1, M|1, ...) array: axis 1 is sliced only where it is not broadcast."""
    return value[:, start:stop] if value.shape[1] > 1 else value
