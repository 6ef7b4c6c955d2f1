"""Detector heads in numpy: decode a raw YOLO head or an NMS output, IoU, class-aware NMS, a detection's entries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BadRequest

TERMS = ("class", "objectness", "box")


@dataclass(frozen=True)
class Head:
    """How a detector's output is laid out (graph_tools.model_info.HEADS):

    yolov8: (4+K, A) per image: cx, cy, w, h in input pixels, then K sigmoid class scores (Ultralytics YOLOv8/YOLO11);
    yolov5: (A, 5+K): cx, cy, w, h, objectness, K class scores (YOLOv5/v7, YOLOX);
    nms:    (D, 6): x0, y0, x1, y1, score, class of the graph's own detections after its NonMaxSuppression;
    ssd:    (A, 4+K): x0, y0, x1, y1, then K class scores: an SSD/RetinaNet-style head's separate boxes and scores
            outputs, joined (graph_tools.SPLIT_HEAD).
    box_scale (W, H) multiplies boxes given normalised to 0-1.
    """
    layout: str
    num_classes: int | None
    box_scale: tuple[float, float] | None = None

    def decode(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (..., A, 4) as x0, y0, x1, y1; class scores (..., A, K); objectness (..., A)) of one image's
        output, or of a stack of them (leading axes kept)."""
        if self.layout == "yolov8":
            rows = np.swapaxes(output, -1, -2)
            boxes, scores, objectness = _corners(rows[..., :4]), rows[..., 4:], np.ones(rows.shape[:-1], rows.dtype)
        elif self.layout == "yolov5":
            boxes, objectness, scores = _corners(output[..., :4]), output[..., 4], output[..., 5:]
        elif self.layout == "ssd":
            boxes, scores, objectness = output[..., :4], output[..., 4:], np.ones(output.shape[:-1], output.dtype)
        else:
            boxes, objectness = output[..., :4], np.ones(output.shape[:-1], output.dtype)
            classes = int(np.nanmax(output[..., 5], initial=0)) + 1
            scores = np.zeros((*output.shape[:-1], max(classes, self.num_classes or 0)), output.dtype)
            np.put_along_axis(scores, output[..., 5:6].astype(np.int64).clip(0), output[..., 4:5], axis=-1)
        if self.box_scale is not None:
            w, h = self.box_scale
            boxes = boxes * np.array([w, h, w, h], boxes.dtype)
        return boxes, scores, objectness

    def entries(self, anchor: int, class_id: int, terms: tuple[str, ...] = ("class",)) -> list[tuple[int, int]]:
        """The (row, column) indices into one image's output that a detection's score sums: its class score, and
        with `terms` its objectness and its four box values."""
        unknown = sorted(set(terms) - set(TERMS))
        if unknown:
            raise BadRequest(f"unknown detection score term {unknown[0]!r}; choose from {', '.join(TERMS)}", "targets")
        if self.layout == "nms":
            picked = [4] + ([0, 1, 2, 3] if "box" in terms else [])
        else:
            first = 5 if self.layout == "yolov5" else 4
            picked = [first + class_id]
            if "objectness" in terms:
                if self.layout != "yolov5":
                    raise BadRequest(f"a {self.layout} head has no objectness", "targets")
                picked.append(4)
            if "box" in terms:
                picked += [0, 1, 2, 3]
        return [(c, anchor) if self.layout == "yolov8" else (anchor, c) for c in picked]

    def scores(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (A, 4), best class (A,), its score times objectness (A,)) of one image's output."""
        boxes, scores, objectness = self.decode(output)
        best = scores.argmax(-1)
        return boxes, best, np.take_along_axis(scores, best[..., None], -1)[..., 0] * objectness


def _corners(centre: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(centre, -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes (..., 4) as x0, y0, x1, y1, broadcasting."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = w * h
    area = lambda z: (z[..., 2] - z[..., 0]).clip(0) * (z[..., 3] - z[..., 1]).clip(0)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy class-aware non-maximum suppression (as torchvision's batched_nms): kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        first, rest = order[0], order[1:]
        kept.append(first)
        overlap = iou(boxes[first], boxes[rest])
        order = rest[(overlap <= threshold) | (classes[rest] != classes[first])]
    return np.asarray(kept, np.int64)
