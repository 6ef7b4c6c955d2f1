"""Small numpy helpers every layer shares: softmax, min-max, count checks, and a scoped one-thread BLAS."""
from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from .errors import BadRequest


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def minmax(x: np.ndarray, eps: float = 1e-7, axes: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """(x - min) / (max(x - min) + eps) over `axes` (pytorch-grad-cam's rule); a constant slice becomes 0,
    also with eps = 0."""
    shifted = x - x.min(axis=axes, keepdims=True)
    top = shifted.max(axis=axes, keepdims=True) + eps
    # where top is 0 the slice is constant, so `shifted` already holds its 0s: divide in place elsewhere
    return np.divide(shifted, top, out=shifted, where=top > 0)


def count(value, name: str, field: str = "options") -> int:
    """A setting that must be an integer >= 1 (True is not one), or BadRequest naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BadRequest(f"{name} must be an integer >= 1, got {value!r}", field)
    return int(value)


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController  # scanning the loaded libraries costs milliseconds: once
    return ThreadpoolController()


_lock = threading.Lock()
_depth = 0
_limiter = None


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS held to one thread while the block runs: its threads busy-wait after each call and
    contend with ONNX Runtime's (FD-CAM's similarity matrix between two runs: 117 -> 76 ms on 2 cores).

    BLAS thread counts are process-wide, so overlapping blocks (concurrent requests) share one limit:
    the first in sets it, the last out restores what was there before; outside every block the process
    keeps its own setting.
    """
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = _controller().limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
