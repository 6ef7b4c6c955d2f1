"""Pointing Game (Zhang et al.) and Energy-based Pointing Game (Score-CAM) against ground-truth boxes."""
from __future__ import annotations

import numpy as np

Boxes = list[tuple[int, int, int, int]]   # (x0, y0, x1, y1) in pixels, x1 and y1 exclusive


def box_mask(boxes: Boxes, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the union of the boxes."""
    mask = np.zeros(size, bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def pointing_game(maps: np.ndarray, boxes: list[Boxes], tolerance: float = 15) -> np.ndarray:
    """Per image, in %: 100 when a ground-truth pixel lies within `tolerance` px of the map's maximum
    (TorchRay's rule; the first maximum in row-major order), 0 for a constant map; NaN for an image
    without boxes."""
    hits = np.full(len(maps), np.nan)
    for i, (saliency, image_boxes) in enumerate(zip(maps, boxes)):
        if not image_boxes:
            continue
        if saliency.max() == saliency.min():   # a blank map points nowhere: a miss, not a lucky (0, 0)
            hits[i] = 0.0
            continue
        py, px = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        mask = box_mask(image_boxes, saliency.shape)
        ys, xs = np.nonzero(mask)
        hits[i] = 100.0 * bool(((ys - py) ** 2 + (xs - px) ** 2 <= tolerance ** 2).any())
    return hits


def energy_pointing_game(maps: np.ndarray, boxes: list[Boxes]) -> np.ndarray:
    """Per image, in %: the share of the min-max normalised map's energy inside the boxes; NaN
    without boxes, 0 for a constant map (it has no energy anywhere)."""
    out = np.full(len(maps), np.nan)
    for i, (saliency, image_boxes) in enumerate(zip(maps, boxes)):
        if not image_boxes:
            continue
        energy = saliency.astype(np.float64) - saliency.min()
        total = energy.sum()
        out[i] = 100.0 * energy[box_mask(image_boxes, saliency.shape)].sum() / total if total > 0 else 0.0
    return out


def border_and_centre(maps: np.ndarray, width: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the map's mean on the `width`-pixel frame along the image border and its mean inside it: a map
    whose border outweighs its centre where the object is not at the border shows an artefact (zero padding's
    responses, say), not class evidence."""
    maps = np.asarray(maps)
    frame = np.zeros(maps.shape[-2:], bool)
    frame[:width], frame[-width:], frame[:, :width], frame[:, -width:] = True, True, True, True
    return maps[..., frame].mean(axis=-1), maps[..., ~frame].mean(axis=-1)
