"""A user's folder of images with ground-truth boxes (boxes.json), as scenes at the model's input size."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .. import images
from ..errors import BadRequest
from .synthetic import Scene


def folder_scenes(directory: str | Path, preprocessing: images.Preprocessing, label_fn: Callable[[np.ndarray], int],
                  boxes_file: str = "boxes.json", limit: int | None = None) -> list[Scene]:
    """Scenes for the images listed in `directory/boxes_file`, in the file's order.

    The file maps an image file name (relative to `directory`) to
    {"boxes": [[x0, y0, x1, y1], ...], "label": optional class id, "classes": optional class id per box
    (a detector's; default: the label)}, boxes in the original image's pixels, x1/y1 exclusive. Only listed
    images are used; other files in the folder are ignored. Each image goes through `images.fit` (short-side
    resize and centre crop, or letterbox) and its boxes through the same mapping, clipped to the window; boxes
    wholly outside it are dropped. An image without boxes (none given, or none left inside the crop) is still
    scored by every metric but the pointing games. A missing label is `label_fn(fitted image)`. `limit`: the
    first that many entries only. Every fitted image must have the same size (a model takes one): set a crop
    where the folder's images differ.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise BadRequest(f"image folder {folder} does not exist or is not a folder", "directory")
    listing = folder / boxes_file
    try:
        entries = json.loads(listing.read_text())
    except OSError as error:
        raise BadRequest(f"cannot read the boxes file {listing}: {error.strerror}", "boxes") from error
    except ValueError as error:   # JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"boxes file {listing} is not valid JSON: {error}", "boxes") from error
    if not isinstance(entries, dict):
        raise BadRequest(f'boxes file {listing} must map image file names to {{"boxes": [[x0, y0, x1, y1], ...], '
                         f'"label": class id (optional)}}, not a {type(entries).__name__}', "boxes")
    scenes, names = [], set()
    for file, entry in list(entries.items())[:limit]:
        where = f"{listing}, entry {file!r}"
        boxes, label, classes = _entry(entry, where)
        path = folder / file
        if not path.is_file():
            raise BadRequest(f"{where}: no such image {path}", "boxes")
        try:
            rgb = images.read(path)
        except BadRequest as error:   # its message does not name the file
            raise BadRequest(f"{where}: {error}", error.field) from error
        fitted = images.fit(rgb, preprocessing)
        fitted_boxes = [(map_box(box, rgb.shape[:2], preprocessing), c) for box, c in zip(boxes, classes)]
        mapped = [m for m, _ in fitted_boxes if m is not None]
        classes = [c for m, c in fitted_boxes if m is not None]
        if scenes and fitted.shape != scenes[0].image.shape:
            raise BadRequest(f"{where}: fits to {fitted.shape[1]}x{fitted.shape[0]}, the first image to "
                             f"{scenes[0].image.shape[1]}x{scenes[0].image.shape[0]}; set a crop", "boxes")
        label = int(label_fn(fitted)) if label is None else label
        name = Path(file).with_suffix("").as_posix().replace("/", "_")
        name = name if name not in names else f"{name}-{len(scenes)}"   # a.jpg beside a.png: two scenes
        names.add(name)
        scenes.append(Scene(name, fitted, label, mapped, "folder",
                            [{"name": name, "label": label if c is None else c, "box": box}
                             for box, c in zip(mapped, classes)]))
    return scenes


def _class_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(entry, where: str) -> tuple[list[tuple[float, ...]], int | None, list[int | None]]:
    if not isinstance(entry, dict):
        raise BadRequest(f'{where}: expected {{"boxes": [[x0, y0, x1, y1], ...], "label": class id (optional)}}, '
                         f"got {entry!r}", "boxes")
    label = entry.get("label")
    if label is not None and not _class_id(label):
        raise BadRequest(f"{where}: label must be a class id (an integer >= 0), got {label!r}", "boxes")
    boxes = entry.get("boxes", [])
    if not isinstance(boxes, list):
        raise BadRequest(f"{where}: boxes must be a list of [x0, y0, x1, y1], got {boxes!r}", "boxes")
    for box in boxes:
        numbers = isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        if not numbers or box[2] <= box[0] or box[3] <= box[1]:
            raise BadRequest(f"{where}: malformed box {box!r}; a box is [x0, y0, x1, y1] in pixels "
                             "with x1 > x0 and y1 > y0", "boxes")
    classes = entry.get("classes")
    if classes is None:
        classes = [None] * len(boxes)
    elif not isinstance(classes, list) or len(classes) != len(boxes) or not all(map(_class_id, classes)):
        raise BadRequest(f"{where}: classes must list one class id (an integer >= 0) per box, got {classes!r}",
                         "boxes")
    return [tuple(box) for box in boxes], label, classes


def map_box(box, shape: tuple[int, int], spec: images.Preprocessing) -> tuple[int, int, int, int] | None:
    """An original-pixel box -> the fitted image's pixels (the geometry of `images.fit`), clipped; None if outside."""
    h, w = shape
    nh, nw, top, left, ch, cw = images.geometry(shape, spec)
    x0, y0, x1, y1 = box
    # edges scale by the actual resize ratio (nw / w, not resize / h: int() truncated the long side)
    x0, x1 = (min(max(round(x * nw / w) - left, 0), cw) for x in (x0, x1))
    y0, y1 = (min(max(round(y * nh / h) - top, 0), ch) for y in (y0, y1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
