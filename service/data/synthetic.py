"""Deterministic composite scenes (scikit-image photos pasted on scikit-image textures) with their boxes."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np
import skimage

DATA = pathlib.Path(skimage.__file__).parent / "data"   # the bundled files; skimage.data's fetchers may download

# (file, crop box x0, y0, x1, y1 around the object). Kept only where the bundled MobileNetV2 is right and
# confident on the crop alone; dropped: rocket.jpg (missile 0.27, obelisk/matchstick once pasted),
# astronaut.png (no ImageNet class; her shuttle model reads as a wine bottle), horse.png (a silhouette: dogs).
CROPS = {
    "cat": ("chelsea.png", (10, 0, 400, 300)),                # Egyptian cat 0.79
    "espresso": ("coffee.png", (160, 10, 430, 330)),          # espresso 1.00
    "motorcycle": ("motorcycle_left.png", (95, 95, 690, 450)),  # moped 0.55
    "tripod": ("camera.png", (228, 230, 410, 512)),            # tripod 1.00 (grayscale photo)
}
OBJECTS: tuple[str, ...] = tuple(CROPS)
TEXTURES = ("grass.png", "gravel.png", "brick.png")
KINDS = {"large": (0.50, 0.80), "small": (0.18, 0.30), "pair": (0.30, 0.45)}   # longer box side / scene side


@dataclass
class Scene:
    name: str                     # e.g. "scene-007-small"
    image: np.ndarray             # (H, W, 3) uint8 RGB
    label: int                    # target class id
    boxes: list[tuple[int, int, int, int]]   # boxes of the target class, (x0, y0, x1, y1), pixels, x1/y1 exclusive
    kind: str                     # "large" | "small" | "pair" | "folder"
    objects: list[dict] = field(default_factory=list)  # every placed object: {"name", "label", "box"}


@lru_cache(maxsize=None)
def _read(file: str) -> np.ndarray:
    image = cv2.imread(str(DATA / file), cv2.IMREAD_COLOR)   # grayscale files come back as 3 equal channels
    if image is None:
        raise FileNotFoundError(f"scikit-image data file {DATA / file} is missing")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image.flags.writeable = False   # cached and shared: callers get copies
    return image


def crop(name: str) -> np.ndarray:
    """The object's crop from its photo, RGB uint8."""
    file, (x0, y0, x1, y1) = CROPS[name]
    return _read(file)[y0:y1, x0:x1].copy()


def objects(label_fn: Callable[[np.ndarray], int]) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (object crop RGB uint8, label_fn(crop)); label_fn runs once per object."""
    result = {}
    for name in OBJECTS:
        image = crop(name)
        result[name] = image, int(label_fn(image))
    return result


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    gray = _read(TEXTURES[rng.integers(len(TEXTURES))])[..., 0]
    if min(gray.shape) < size:
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
    top, left = rng.integers(gray.shape[0] - size + 1), rng.integers(gray.shape[1] - size + 1)
    tint = rng.uniform(0.45, 1.0, 3)   # colour the gray textures so scenes are not all gray
    return np.uint8(gray[top:top + size, left:left + size, None] * tint + 0.5)


def _shape(image: np.ndarray, fraction: float, size: int) -> tuple[int, int]:
    """(h, w) of the object scaled so its longer side is `fraction` of the scene, aspect kept."""
    scale = fraction * size / max(image.shape[:2])
    return max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))


def _paste(scene: np.ndarray, image: np.ndarray, x: int, y: int, h: int, w: int) -> tuple[int, int, int, int]:
    shrink = h * w < image.shape[0] * image.shape[1]
    scene[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return x, y, x + w, y + h


def side_by_side(shapes: list[tuple[int, int]], size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(x, y) corners of two objects of (h, w) `shapes` side by side along a random axis, not overlapping; the
    first offset leaves room for the second after it, and the order is mirrored half the time, so that the
    first is not always left or top."""
    axis = rng.integers(2)
    extents = [shape[1 - axis] for shape in shapes]
    first = rng.integers(size - sum(extents) + 1)
    along = [first, rng.integers(first + extents[0], size - extents[1] + 1)]
    if rng.integers(2):
        along = [size - a - e for a, e in zip(along, extents)]
    across = [rng.integers(size - shape[axis] + 1) for shape in shapes]
    return [(int(a), int(c)) if axis == 0 else (int(c), int(a)) for a, c in zip(along, across)]


def synthetic_scenes(n: int, label_fn: Callable[[np.ndarray], int], size: int = 224, seed: int = 0) -> list[Scene]:
    """`n` scenes cycling large / small / pair, each a function of (seed, size, label_fn) only.

    The target cycles through a seeded order of OBJECTS (3 kinds, 4 objects: every kind-target combination
    within 12 scenes). A pair's second object is a distractor of another class beside the target, not overlapping.
    """
    rng = np.random.default_rng(seed)
    catalogue = objects(label_fn)
    order = [OBJECTS[i] for i in rng.permutation(len(OBJECTS))]
    scenes = []
    for i in range(n):
        kind = tuple(KINDS)[i % len(KINDS)]
        low, high = KINDS[kind]
        target = order[i % len(order)]
        names = [target]
        if kind == "pair":
            others = [o for o in OBJECTS if catalogue[o][1] != catalogue[target][1]]
            if not others:
                raise ValueError(f"no object has a label other than {target!r}'s {catalogue[target][1]}: "
                                 "label_fn gives every object the same class, so pairs cannot be built")
            names.append(others[rng.integers(len(others))])
        image = _texture(size, rng)
        shapes = [_shape(catalogue[name][0], rng.uniform(low, high), size) for name in names]
        if kind == "pair":
            corners = side_by_side(shapes, size, rng)
        else:
            h, w = shapes[0]
            corners = [(rng.integers(size - w + 1), rng.integers(size - h + 1))]
        placed = []
        for name, (h, w), (x, y) in zip(names, shapes, corners):
            box = _paste(image, catalogue[name][0], int(x), int(y), h, w)
            placed.append({"name": name, "label": catalogue[name][1], "box": box})
        scenes.append(Scene(f"scene-{i:03d}-{kind}", image, placed[0]["label"], [placed[0]["box"]], kind, placed))
    return scenes
