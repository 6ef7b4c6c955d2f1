"""Average Drop, Increase in Confidence and Average Gain: how the class probability moves on the explanation image."""
from __future__ import annotations

import numpy as np


def explanation_images(x: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The normalised input times its [0, 1] map: masked pixels fall to 0, the dataset-mean colour
    under mean/std normalisation (Poppi et al., ReciproCAM and pytorch-grad-cam all mask the
    normalised tensor)."""
    return (x * maps[:, None]).astype(np.float32)


def average_drop(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per image, in %: max(0, Y - O) / Y (Grad-CAM++). Lower is better."""
    return 100.0 * np.maximum(0.0, y - o) / np.maximum(y, 1e-12)


def increase_in_confidence(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per image, in %: 100 where O > Y. Higher is better."""
    return 100.0 * (o > y).astype(np.float64)


def average_gain(y: np.ndarray, o: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Per image, in %: max(0, O - Y) / (1 - Y + eps) (Opti-CAM). Higher is better."""
    return 100.0 * np.maximum(0.0, o - y) / (1.0 - y + eps)
