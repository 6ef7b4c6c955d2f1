"""The benchmark: many scenes from scikit-image photos, kept only where the evaluated model is right.

Each candidate is a function of (seed, index) alone, so two models see the same candidates and the kept
scenes of one model are a reproducible subset. Kinds:

- "photo": a square crop of the object's own photo around it (the object's real surroundings), the
  object's longer side 45-90% of the crop;
- "large" / "medium": the object alone pasted on a real texture at 55-90% / 35-55% of the scene side;
- "pair": the object (35-55%) beside another object of a different class (25-40%).

A candidate is kept when `accept` (the model's top-1 equals the label) says so; candidates are drawn
until `n` are kept, and the count drawn is returned beside them.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .synthetic import Scene, _paste, _read, _shape, side_by_side

__all__ = ["BENCH_OBJECTS", "BACKGROUNDS", "BENCH_KINDS", "candidate", "benchmark_scenes"]

# name -> (file, object box in the photo x0, y0, x1, y1; None = the whole image is the object). Labels come
# from the label model's top-1 on the box alone; both bundled models agree on these (see docs/results.md).
BENCH_OBJECTS: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {
    "cat": ("chelsea.png", (10, 0, 400, 300)),
    "espresso": ("coffee.png", (160, 10, 430, 330)),
    "moped": ("motorcycle_left.png", (95, 95, 690, 450)),
    "tripod": ("camera.png", (228, 230, 410, 512)),
    "clock": ("clock_motion.png", None),
    "chessboard": ("chessboard_RGB.png", None),
}
BACKGROUNDS = ("grass.png", "gravel.png", "brick.png", "moon.png", "page.png", "hubble_deep_field.jpg")
BENCH_KINDS = {"photo": (0.45, 0.90), "large": (0.55, 0.90), "medium": (0.35, 0.55), "pair": (0.35, 0.55)}
_SECOND = (0.25, 0.40)


def _object(name: str) -> np.ndarray:
    file, box = BENCH_OBJECTS[name]
    image = _read(file)
    if box is None:
        return image.copy()
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1].copy()


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square of a real texture or photo, tinted when it is gray, at a random zoom."""
    image = _read(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    side = int(rng.integers(min(size, min(image.shape[:2])), min(image.shape[:2]) + 1))
    top, left = rng.integers(image.shape[0] - side + 1), rng.integers(image.shape[1] - side + 1)
    patch = cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    if np.ptp(patch.astype(np.int16), axis=2).max() < 8:   # gray: coloured so that scenes are not all gray
        patch = np.uint8(patch[..., :1] * rng.uniform(0.45, 1.0, 3) + 0.5)
    return patch


def _photo_crop(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A square crop of the photo holding the object's box at a random scale and offset, resized to size."""
    file, (x0, y0, x1, y1) = BENCH_OBJECTS[name]
    image = _read(file)
    height, width = image.shape[:2]
    long = max(x1 - x0, y1 - y0)
    side = int(min(min(height, width), long / rng.uniform(*BENCH_KINDS["photo"])))
    # any offset that keeps the box's centre inside the crop, clamped to the photo
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left = int(np.clip(rng.integers(cx - side + 1, cx + 1), 0, width - side))
    top = int(np.clip(rng.integers(cy - side + 1, cy + 1), 0, height - side))
    scene = cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    f = size / side
    box = (max(0, round((x0 - left) * f)), max(0, round((y0 - top) * f)),
           min(size, round((x1 - left) * f)), min(size, round((y1 - top) * f)))
    return scene, box


def candidate(index: int, labels: dict[str, int], size: int = 224, seed: int = 0) -> Scene:
    """Candidate `index`: its kind and object cycle (every kind with every object within 24 candidates), the
    rest drawn from a generator seeded by (seed, index). labels: object name -> class id."""
    rng = np.random.default_rng([seed, index])
    names = list(BENCH_OBJECTS)
    kind = tuple(BENCH_KINDS)[index % len(BENCH_KINDS)]
    target = names[(index // len(BENCH_KINDS)) % len(names)]
    if kind == "photo" and BENCH_OBJECTS[target][1] is None:   # a whole-image object has no surroundings
        kind = "large"
    if kind == "photo":
        image, box = _photo_crop(target, size, rng)
        placed = [{"name": target, "label": labels[target], "box": box}]
        return Scene(f"bench-{index:04d}-{kind}-{target}", image, labels[target], [box], kind, placed)
    image = _background(size, rng)
    chosen = [target]
    fractions = [rng.uniform(*BENCH_KINDS[kind])]
    if kind == "pair":
        others = [o for o in names if labels[o] != labels[target]]
        if not others:
            raise ValueError("every object has the same label, so pairs cannot be built")
        chosen.append(others[rng.integers(len(others))])
        fractions.append(rng.uniform(*_SECOND))
    crops = [_object(name) for name in chosen]
    shapes = [_shape(c, f, size) for c, f in zip(crops, fractions)]
    if kind == "pair":
        corners = side_by_side(shapes, size, rng)
    else:
        h, w = shapes[0]
        corners = [(int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1)))]
    placed = []
    for name, crop, (h, w), (x, y) in zip(chosen, crops, shapes, corners):
        placed.append({"name": name, "label": labels[name], "box": _paste(image, crop, x, y, h, w)})
    return Scene(f"bench-{index:04d}-{kind}-{target}", image, labels[target], [placed[0]["box"]], kind, placed)


def benchmark_scenes(n: int, label_fn: Callable[[np.ndarray], int],
                     accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, size: int = 224,
                     seed: int = 0, max_candidates: int | None = None, batch: int = 32) -> tuple[list[Scene], int]:
    """The first `n` candidates that `accept(images (B, H, W, 3) uint8, labels (B,)) -> bool (B,)` keeps (all
    of them without `accept`), and how many candidates were drawn. label_fn(object crop) -> class id runs
    once per object. Raises ValueError when max_candidates (default 10 n) are drawn before n are kept."""
    labels = {name: int(label_fn(_object(name))) for name in BENCH_OBJECTS}
    limit = max_candidates or 10 * n
    kept: list[Scene] = []
    drawn = 0
    while len(kept) < n:
        if drawn >= limit:
            raise ValueError(f"only {len(kept)} of {drawn} candidate scenes were classified as their label; "
                             f"{n} were asked for")
        part = [candidate(i, labels, size, seed) for i in range(drawn, min(limit, drawn + batch))]
        drawn += len(part)
        keep = np.ones(len(part), bool) if accept is None else np.asarray(
            accept(np.stack([s.image for s in part]), np.array([s.label for s in part])), bool)
        kept += [s for s, k in zip(part, keep) if k]
    kept = kept[:n]
    drawn = int(kept[-1].name.split("-")[1]) + 1 if kept else drawn   # the candidates up to the n-th kept one
    return kept, drawn
